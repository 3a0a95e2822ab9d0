"""One GRPO run, start to finish: config → rewards → data → model → GRPOTrainer → eval → train → save → eval.

`train` below is the whole learning path; read it first (`python -m core.train` runs it: core/train.py).
TRL's GRPOTrainer does each GRPO step (the README's "What GRPO does here" says what one does); this
project records what it sampled and scored (core/rollouts.py). Everything the run produces lands in
its run directory (`train.output_dir`; docs/run-directory.md). The process around the run (the folder's lock,
status.json, SIGTERM, train.log, several processes) is core/lifecycle.py's: `run` is its handle, one
line wherever the pipeline meets it, and nothing here imports it.
"""

from __future__ import annotations

from pathlib import Path

from core import collector_paused
from core.config import GRPO_FROM_CONFIG, RunConfig, updates_per_batch
from core.data import load_rows, to_dataset
from core.errors import ConfigError
from core.evaluate import evaluate_run
from core.model import check_generation, load_model, pick_device
from core.rewards import resolve_reward
from core.rollouts import logged_rewards, updates_recorded
from core.rundir import model_dir
from core.stop_at_final import end_at_final_line
from core.trackers import TrackerRuns


def train(cfg: RunConfig, run, resume: Path | None = None) -> str:
    """The run's steps; returns the final state (`finished` or `stopped`). With `resume`, training
    continues from that checkpoint and the eval before training is the one already on file."""
    # TRL and transformers take seconds to import: imported here, once the stop handler is in place
    # (lifecycle.main), so that a worker stopped while it starts is stopped, not killed; with Python's
    # garbage collector paused (core/__init__.py says why)
    with collector_paused():
        import transformers
        from trl import GRPOTrainer

    device = pick_device()
    check_generation(cfg, device)
    rewards = reward_functions(cfg)

    run.phase("loading data")
    # bad data fails before a model loads
    train_rows, eval_rows = load_rows(cfg.dataset, cfg.train.seed, evaluates=cfg.eval.enabled)
    transformers.set_seed(cfg.train.seed)

    run.phase("loading model")
    model, tokenizer = load_model(cfg, device)
    if cfg.stop_at_final:
        end_at_final_line(model, tokenizer)  # sampling and eval end a completion at its Final line
    train_set, eval_set = to_dataset(train_rows, tokenizer), to_dataset(eval_rows, tokenizer)

    run.workers_meet()
    args = grpo_args(cfg, device)  # the workers of a multi-process run meet here
    recorder = run.recorder(args.process_index)
    if updates_per_batch(cfg) > 1:  # each batch of samples trains several updates: record each one's ratios
        GRPOTrainer = updates_recorded(GRPOTrainer, recorder)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=logged_rewards(rewards, recorder, cfg.num_generations),
        args=args,
        train_dataset=train_set,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),  # None: every weight trains
        callbacks=[run.callback(periodic_eval=every_eval_steps(cfg, run, model, tokenizer, eval_set))],
    )
    run.running(trainer)
    trackers = TrackerRuns(trainer)  # W&B, TensorBoard, MLflow...: open until the eval after is logged to them
    model = trainer.model  # with LoRA, the model with its adapters (TRL wrapped it)
    if cfg.peft.r > 0 and run.is_main:
        model.print_trainable_parameters()  # "trainable params: ... || all params: ... || trainable%: ..."

    summaries = {}
    with run.stoppable_on_main():  # rank 0 evaluates; the others wait for it
        if cfg.eval.enabled and resume is None and run.is_main:
            summaries["before"] = evaluate_run(
                cfg, run.dir, model, tokenizer, eval_set, "before", progress=run.progress("eval before")
            )
    if run.stop_agreed(args.device):  # every rank agrees, before any of them trains
        trackers.end(summaries)
        return "stopped"

    run.phase("training", 0, cfg.train.num_train_steps)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    run.phase("saving")
    trainer.save_model(str(model_dir(run.dir)))
    if run.is_main:
        tokenizer.save_pretrained(model_dir(run.dir))
    if run.stopped:
        trackers.end(summaries)
        return "stopped"

    with run.stoppable_on_main():  # the other ranks are done
        if cfg.eval.enabled and run.is_main:
            summaries["after"] = evaluate_run(
                cfg, run.dir, model, tokenizer, eval_set, "after", progress=run.progress("eval after")
            )
    trackers.end(summaries)  # the eval before and after, at the last step
    return "stopped" if run.stopped else "finished"


def reward_functions(cfg: RunConfig) -> list[tuple[str, object, float]]:
    """(name, function, weight) for each of the config's rewards. A custom reward's module is imported
    now, when the run starts, not when its config is read."""
    try:
        return [(r["name"], resolve_reward(r["name"]), r["weight"]) for r in cfg.rewards]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def grpo_args(cfg: RunConfig, device: str):
    """TRL's GRPOConfig: the fields this config sets (config.GRPO_FROM_CONFIG), defaults for this
    device, and the `grpo:` passthrough. The generation batch is TRL's default, one optimizer step's
    completions: every step trains on fresh samples unless `grpo:` asks for reuse."""
    from trl import GRPOConfig

    defaults = dict(
        bf16=device == "cuda",
        use_cpu=device == "cpu",  # also makes several CPU processes (torchrun) train together over gloo
        project="simple_grpo",  # Trackio's project
    )
    settings = {name: value(cfg) for name, (_, value) in GRPO_FROM_CONFIG.items()}
    return GRPOConfig(**{**defaults, **cfg.grpo, **settings})


def lora_config(cfg: RunConfig):
    """PEFT's LoraConfig from the `peft:` section, or None when peft.r is 0 (full fine-tuning). TRL
    wraps the model with it: the model's own weights are frozen and only the adapters train; with
    grpo.beta > 0 the reference is the same model with its adapters switched off (no second copy)."""
    if cfg.peft.r == 0:
        return None
    from peft import LoraConfig

    p = cfg.peft
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=p.r,
        lora_alpha=p.lora_alpha,
        lora_dropout=p.lora_dropout,
        target_modules=p.target_modules,
        bias=p.bias,
    )


def every_eval_steps(cfg: RunConfig, run, model, tokenizer, eval_set):
    """The eval during training, every `train.eval_steps` steps (rank 0), logged with the metrics;
    None when there is none."""
    if not (cfg.eval.enabled and cfg.train.eval_steps):
        return None

    def periodic_eval(step: int) -> None:
        if step % cfg.train.eval_steps == 0 and step < cfg.train.num_train_steps:
            summary = evaluate_run(cfg, run.dir, model, tokenizer, eval_set)
            run.log_metrics(step, {k: v for k, v in summary.items() if k != "n"})

    return periodic_eval
