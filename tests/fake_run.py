"""Write a large synthetic run directory for store benchmarks: realistic record sizes, K-sample groups.

    python -m tests.fake_run OUT_DIR --rollouts 1000000 --ranks 2

Prompts are ~600 characters (chat-templated), completions ~800; rewards follow a mix of
malformed / wrong / correct that improves over steps, like a learning run.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from core.prompts import SYSTEM_PROMPT, prompt_id
from core.rundir import rollout_record, rollouts_path

WORDS = (
    "so the total is then each of them buys more apples than before which means we add and subtract "
    "multiply the number by two because half of it goes to"
).split()


def records(
    n: int, rank: int, ranks: int, start: int = 0, k: int = 8, prompts: int = 500, ramp: int = 2000, seed: int = 0
):
    """Rollouts [start, start + n) of one rank: groups of K samples per prompt over the ranks, 16
    groups per step."""
    rng = random.Random(seed)  # the same prompts on every rank: a group's K samples span the ranks
    texts = []
    for p in range(prompts):
        question = f"Question {p}: " + " ".join(rng.choice(WORDS) for _ in range(40))
        prompt = (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        texts.append((prompt_id(prompt), prompt, question, str(rng.randint(1, 500))))
    rng = random.Random(f"{seed}/{rank}/{start}")
    per_rank_group = k // ranks
    groups_per_step = 16
    for i in range(start, start + n):
        group, sample = divmod(i, per_rank_group)
        step = group // groups_per_step + 1  # steps count from 1, as TRL's metrics do
        pid, prompt, question, gt = texts[(group * 7 + step) % prompts]
        skill = min(0.9, step / ramp)  # the share of correct answers grows over `ramp` steps
        roll = rng.random()
        if roll < 0.3 * (1 - skill):
            completion, pred, reward = " ".join(rng.choice(WORDS) for _ in range(150)), None, 0.0
        else:
            pred = gt if rng.random() < skill else str(rng.randint(1, 500))
            completion = " ".join(rng.choice(WORDS) for _ in range(140)) + f"\nFinal: {pred}"
            reward = 1.0 if pred == gt else 0.1
        yield rollout_record(
            step=step,
            prompt_id=pid,
            prompt=prompt,
            question=question,
            completion=completion,
            prediction=pred,
            ground_truth=gt,
            reward=reward,
            rewards={"gsm8k": reward},
            correct=reward == 1.0,
            rank=rank,
            sample=rank * per_rank_group + sample,
            completion_tokens=len(completion) // 4,
            time=1.7e9 + i,
        )


def write_run(out: Path, n: int, ranks: int = 2, start: int = 0, **kwargs) -> None:
    """Append rollouts [start, start + n) of every rank to `out` (n spread over the ranks)."""
    for rank in range(ranks):
        path = rollouts_path(out, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records(n // ranks, rank, ranks, start // ranks, **kwargs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--rollouts", type=int, default=1_000_000)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    write_run(args.out, args.rollouts, args.ranks)
