"""Record every scored completion: one JSON line per completion, append-only, one file per rank.

`logged_rewards([(name, fn, weight), ...], recorder, num_generations)` wraps TRL reward functions
so that each scored batch is also appended to `rollouts/rollouts.jsonl` (rank 0) or
`rollouts/rollouts.rank<R>.jsonl` (rank R >= 1), with one buffered write and flush per batch; the
token ids each completion was sampled as go, keyed the same way, to `tokens/` (core/tokens.py reads them).

`updates_recorded(GRPOTrainer, recorder)` is TRL's trainer that also writes, when a batch of samples
trains several updates, each update's per-token ratios to `updates/` (the Rollouts page's worked step).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.rewards import called, completion_text, extract_model_final, numbers_equal
from core.rundir import rollout_record, rollouts_path, tokens_path, updates_path


class RolloutRecorder:
    """Appends rollout records to this rank's file; never rewrites it."""

    def __init__(self, run_dir: str | Path, rank: int = 0, attempt: int = 1):
        self.rank, self.attempt = rank, attempt
        self.path, self.tokens = rollouts_path(run_dir, rank), tokens_path(run_dir, rank)
        self.updates = updates_path(run_dir, rank)
        for path in (self.path, self.tokens):
            path.parent.mkdir(parents=True, exist_ok=True)
        self.last: list[dict] = []  # the batch written last, in the order TRL scored it

    def write(self, records: list[dict], token_ids: list[list[int]] | None = None) -> None:
        self.last = records
        if not records:
            return
        if token_ids is not None:  # first, so that a rollout on the page has its tokens
            _append(
                self.tokens,
                [
                    {
                        "step": r["step"],
                        "prompt_id": r["prompt_id"],
                        "sample": r["sample"],
                        "attempt": r["attempt"],
                        "ids": [int(i) for i in ids],
                    }
                    for r, ids in zip(records, token_ids)
                ],
            )
        _append(self.path, records)

    def write_updates(self, records: list[dict]) -> None:
        self.updates.parent.mkdir(exist_ok=True)
        _append(self.updates, records)


def _append(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def logged_rewards(rewards: list[tuple[str, object, float]], recorder: RolloutRecorder, num_generations: int):
    """TRL reward functions, one per (name, function, weight), that score as given and record each
    completion once, with every reward's value and their weighted total.

    TRL calls the reward functions one after another on the same batch; the last one writes the
    records. TRL lays out each prompt's K completions consecutively across ranks, rank 0's slice
    first, so a completion's place in its group is its global index modulo K."""
    values: dict[str, list] = {}

    def write(prompts, completions, completion_ids, step, offset, kwargs):
        now = time.time()
        records = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            text = completion_text(completion)
            prediction = extract_model_final(text)
            parts = {name: values[name][i] for name, _, _ in rewards}
            records.append(
                rollout_record(
                    step=step,
                    prompt_id=kwargs["prompt_id"][i],
                    prompt=prompt if isinstance(prompt, str) else json.dumps(prompt),
                    question=kwargs["question"][i],
                    completion=text,
                    prediction=prediction,
                    ground_truth=kwargs["answer_final"][i],
                    # TRL's total: a function's None counts 0 beside another's value, and none at all is no
                    # reward (TRL's NaN: left out of its group's mean and std, its advantage 0)
                    reward=None
                    if all(v is None for v in parts.values())
                    else sum(weight * (parts[name] or 0.0) for name, _, weight in rewards),
                    rewards=parts,
                    correct=numbers_equal(prediction, kwargs["answer_final"][i]),
                    rank=recorder.rank,
                    sample=(offset + i) % num_generations,
                    completion_tokens=len(completion_ids[i]) if completion_ids is not None else None,
                    time=now,
                    attempt=recorder.attempt,
                )
            )
        recorder.write(records, completion_ids)

    def wrap(name, fn, last):
        def reward(prompts, completions, completion_ids=None, trainer_state=None, **kwargs):
            # TRL's convention: the update a batch feeds is step global_step + 1, and its metrics are logged
            # under that step; the completions scored for it belong to the same step (the first is step 1)
            step = trainer_state.global_step + 1 if trainer_state is not None else 1
            offset = recorder.rank * len(completions)  # this rank's first completion's place in the batch
            values[name] = called(  # one finite number (or None) per completion, else one line naming it
                name,
                fn,
                dict(
                    prompts=prompts,
                    completions=completions,
                    completion_ids=completion_ids,
                    trainer_state=trainer_state,
                    **kwargs,
                ),
                lambda i: f"step {step}, prompt {kwargs['prompt_id'][i]}, sample {(offset + i) % num_generations}",
                f"step {step}",
            )
            if last:
                write(prompts, completions, completion_ids, step, offset, kwargs)
            return values[name]

        reward.__name__ = name  # TRL names its metrics after it: rewards/<name>/mean
        return reward

    return [wrap(name, fn, i == len(rewards) - 1) for i, (name, fn, _) in enumerate(rewards)]


def updates_recorded(GRPOTrainer, recorder: RolloutRecorder):
    """TRL's GRPOTrainer, unchanged in what it trains, that also writes to `updates/` each sample's
    per-token ratio exp(logp - old) as each optimizer step's loss uses it (core/loss.py): for a run
    whose batch of samples trains several updates, so that each of them can be shown as it was.

    Which sample a row of a micro-batch is: TRL shuffles the batch it generated before splitting it
    into micro-batches, and shuffles every tensor of it alike, so a tensor of each completion's place
    in the scored batch (`recorder.last`) travels with it."""
    import torch

    class UpdatesRecorded(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            batch["scored_as"] = torch.arange(len(batch["advantages"]), device=batch["advantages"].device)
            self._scored = recorder.last
            return batch

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            logps, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if torch.is_grad_enabled():  # the loss's own; the old and reference ones are taken without
                self._logps = logps.detach()
            return logps, *rest

        def _compute_loss(self, model, inputs):
            self._logps = None
            loss = super()._compute_loss(model, inputs)
            if self._logps is not None and "scored_as" in inputs:
                old = inputs.get("old_per_token_logps")  # None: TRL's own shortcut, old = logp (ratio 1)
                ratios = torch.exp(self._logps - (self._logps if old is None else old)).float().cpu()
                mask = inputs["completion_mask"].bool().cpu()
                step = self.state.global_step + 1
                records = []
                for i, place in enumerate(inputs["scored_as"].tolist()):
                    scored = self._scored[place]
                    records.append(
                        {
                            "step": step,
                            "batch_step": scored["step"],
                            "prompt_id": scored["prompt_id"],
                            "sample": scored["sample"],
                            "attempt": scored["attempt"],
                            "advantage": float(inputs["advantages"][i]),
                            "ratios": [float(f"{r:.6g}") for r in ratios[i][mask[i]].tolist()],
                        }
                    )
                recorder.write_updates(records)
            return loss

    return UpdatesRecorded
