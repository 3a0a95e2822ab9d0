"""Record every scored completion: one JSON line per completion, append-only, one file per rank.

`logged_reward(reward_fn, recorder, num_generations)` wraps a TRL reward function so that each
call also appends its batch to `rollouts/rollouts.jsonl` (rank 0) or
`rollouts/rollouts.rank<R>.jsonl` (rank R >= 1), with one buffered write and flush per call.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from core.rewards import CORRECT, completion_text, extract_model_final


def rollouts_path(run_dir: str | Path, rank: int = 0) -> Path:
    name = "rollouts.jsonl" if rank == 0 else f"rollouts.rank{rank}.jsonl"
    return Path(run_dir) / "rollouts" / name


class RolloutRecorder:
    """Appends rollout records to this rank's file; never rewrites it."""

    def __init__(self, run_dir: str | Path, rank: int = 0):
        self.rank = rank
        self.path = rollouts_path(run_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()


def logged_reward(reward_fn, recorder: RolloutRecorder, num_generations: int):
    """A reward function with TRL's signature that scores with `reward_fn` and records each
    completion. TRL lays out each prompt's K completions consecutively across ranks, rank 0's
    slice first, so a completion's place in its group is its global index modulo K."""

    @functools.wraps(reward_fn)
    def wrapper(prompts, completions, completion_ids=None, trainer_state=None, **kwargs):
        rewards = reward_fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        offset = recorder.rank * len(completions)
        step = trainer_state.global_step if trainer_state is not None else 0
        now = time.time()
        records = []
        for i, (prompt, completion, reward) in enumerate(zip(prompts, completions, rewards, strict=True)):
            text = completion_text(completion)
            records.append({
                "step": step,
                "prompt_id": kwargs["prompt_id"][i],
                "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
                "question": kwargs["question"][i],
                "completion": text,
                "prediction": extract_model_final(text),
                "ground_truth": kwargs["answer_final"][i],
                "reward": reward,
                "correct": reward == CORRECT,
                "rank": recorder.rank,
                "sample": (offset + i) % num_generations,
                "completion_tokens": len(completion_ids[i]) if completion_ids is not None else None,
                "time": now,
            })
        recorder.write(records)
        return rewards

    return wrapper
