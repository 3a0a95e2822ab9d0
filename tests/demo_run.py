"""One run of the offline demo (configs/demo_cpu.yaml) and what it learned, for tests/test_demo.py and
tests/benchmarks/bench_demo.py."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core import REPO as ROOT


def run_demo(seed: int, out: Path, sets: list[str]) -> dict:
    """One demo run; returns its eval summary, early/late mean reward and wall time."""
    start = time.time()
    args = [
        sys.executable,
        "-m",
        "core.train",
        "--config",
        "configs/demo_cpu.yaml",
        "--set",
        f"train.seed={seed}",
        "--set",
        f"train.output_dir={out}",
        *[a for s in sets for a in ("--set", s)],
    ]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    summary = json.loads((out / "eval" / "summary.json").read_text())
    before, after = (
        {r["prompt_id"]: r["correct"] for r in map(json.loads, (out / "eval" / f"{phase}.jsonl").open())}
        for phase in ("before", "after")
    )
    changes = [int(after[q]) - int(before[q]) for q in before]  # per question: +1 learned, -1 forgotten
    rewards = {}
    for line in (out / "rollouts" / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        rewards.setdefault(record["step"], []).append(record["reward"])
    steps = sorted(rewards)
    fifth = max(1, len(steps) // 5)
    early = statistics.mean(r for s in steps[:fifth] for r in rewards[s])
    late = statistics.mean(r for s in steps[-fifth:] for r in rewards[s])
    return {
        "before": summary["before"]["eval_accuracy"],
        "after": summary["after"]["eval_accuracy"],
        "interval": mean_interval(changes, z=1.96),
        "early_reward": early,
        "late_reward": late,
        "seconds": time.time() - start,
    }


T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student's t, 95%


def mean_interval(values: list[float], z: float | None = None) -> tuple[float, float]:
    """A 95% interval for the mean of `values`: normal (z) for many paired per-question changes,
    Student's t over a few seeds."""
    m, n = statistics.mean(values), len(values)
    if n < 2:
        return m, m
    k = z or T_975.get(n - 1, 1.96)
    half = k * statistics.stdev(values) / n**0.5
    return m - half, m + half
