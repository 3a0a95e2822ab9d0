"""Does the offline demo learn? Runs configs/demo_cpu.yaml for several seeds and prints eval
accuracy before → after and mean reward in the first vs last fifth of training steps.

    python -m tests.benchmarks.bench_demo [--seeds 0 1 2] [--set key=value ...]

Measured figures only; nothing here asserts them (tests/test_demo.py holds the one slow check).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_demo(seed: int, out: Path, sets: list[str]) -> dict:
    """One demo run; returns its eval summary, early/late mean reward and wall time."""
    start = time.time()
    args = [sys.executable, "-m", "core.train", "--config", "configs/demo_cpu.yaml",
            "--set", f"train.seed={seed}", "--set", f"train.output_dir={out}", *[a for s in sets for a in ("--set", s)]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    summary = json.loads((out / "eval" / "summary.json").read_text())
    before, after = ({r["prompt_id"]: r["correct"] for r in map(json.loads, (out / "eval" / f"{phase}.jsonl").open())}
                     for phase in ("before", "after"))
    changes = [int(after[q]) - int(before[q]) for q in before]  # per question: +1 learned, -1 forgotten
    rewards = {}
    for line in (out / "rollouts" / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        rewards.setdefault(record["step"], []).append(record["reward"])
    steps = sorted(rewards)
    fifth = max(1, len(steps) // 5)
    early = statistics.mean(r for s in steps[:fifth] for r in rewards[s])
    late = statistics.mean(r for s in steps[-fifth:] for r in rewards[s])
    return {"before": summary["before"]["eval_accuracy"], "after": summary["after"]["eval_accuracy"],
            "interval": mean_interval(changes, z=1.96), "early_reward": early, "late_reward": late,
            "seconds": time.time() - start}


T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student's t, 95%


def mean_interval(values: list[float], z: float | None = None) -> tuple[float, float]:
    """A 95% interval for the mean of `values`: normal (z) for many paired per-question changes,
    Student's t over a few seeds."""
    m, n = statistics.mean(values), len(values)
    if n < 2:
        return m, m
    k = z or T_975.get(n - 1, 1.96)
    half = k * statistics.stdev(values) / n ** 0.5
    return m - half, m + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = run_demo(seed, Path(tmp) / f"seed{seed}", args.set)
            results.append(r)
            low, high = r["interval"]
            print(f"seed {seed}: eval accuracy {100 * r['before']:.1f}% -> {100 * r['after']:.1f}% "
                  f"({100 * (r['after'] - r['before']):+.1f} points, 95% interval {100 * low:+.1f} to {100 * high:+.1f}), "
                  f"mean reward first fifth {r['early_reward']:.3f} -> last fifth {r['late_reward']:.3f}, "
                  f"{r['seconds']:.0f} s", flush=True)
    gains = [r["after"] - r["before"] for r in results]
    low, high = mean_interval(gains)
    print(f"mean over {len(results)} seeds: {100 * statistics.mean(gains):+.1f} points of eval accuracy "
          f"(95% interval over seeds {100 * low:+.1f} to {100 * high:+.1f}; lowest seed {100 * min(gains):+.1f}), "
          f"mean reward {statistics.mean(r['early_reward'] for r in results):.3f} -> "
          f"{statistics.mean(r['late_reward'] for r in results):.3f}")
    print(f"every seed at least +10 points: {'yes' if min(gains) >= 0.10 else 'no'}; mean at least +15 points: "
          f"{'yes' if statistics.mean(gains) >= 0.15 else 'no'}; slowest seed {max(r['seconds'] for r in results):.0f} s")


if __name__ == "__main__":
    main()
