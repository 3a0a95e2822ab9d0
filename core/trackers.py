"""The run's trackers (runtime.report_to: W&B, TensorBoard, Trackio, MLflow, ...) stay open until the
eval after training is logged to them.

transformers gives each tracker a callback, and each one ends its tracker's run when training ends
(`on_train_end`: MLflow ends its run, TensorBoard closes its event file, Trackio finishes). The eval
after comes later, so `TrackerRuns` holds those ends back: `end(summaries)` logs the eval before and
after to every tracker, at the last step, through its own callback, then ends each one as
transformers would have. It runs once, whichever way the run ends (finished, stopped, or an error:
then at the process's exit).
"""

from __future__ import annotations

import atexit


class TrackerRuns:
    def __init__(self, trainer):
        from transformers.integrations import INTEGRATION_TO_CALLBACK

        self.trainer = trainer
        kinds = tuple(INTEGRATION_TO_CALLBACK.values())
        self.callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, kinds)]
        self.wandb = any(isinstance(cb, INTEGRATION_TO_CALLBACK["wandb"]) for cb in self.callbacks)
        for callback in self.callbacks:
            callback.on_train_end = _held  # the instance's own attribute hides the class's method until end()
        self.ended = False
        atexit.register(self.end, {})

    def end(self, summaries: dict) -> None:
        """Log `summaries` ({"before": {...}, "after": {...}}) as eval_<phase>/<figure> to every tracker
        (W&B also as its run's summary), then end each tracker's run."""
        if self.ended:
            return
        self.ended = True
        atexit.unregister(self.end)
        trainer = self.trainer
        logs = {f"eval_{phase}/{k}": v for phase, s in summaries.items() for k, v in s.items()}
        for callback in self.callbacks:
            if logs:
                callback.on_log(trainer.args, trainer.state, trainer.control, logs=dict(logs), model=trainer.model)
            del callback.on_train_end
            callback.on_train_end(
                trainer.args,
                trainer.state,
                trainer.control,
                model=trainer.model,
                processing_class=trainer.processing_class,
            )
        if self.wandb:
            import wandb

            if wandb.run is not None:
                if logs:
                    wandb.run.summary.update(logs)
                wandb.finish()


def _held(*args, **kwargs) -> None:
    """A tracker's end of run, while TrackerRuns holds it back."""
