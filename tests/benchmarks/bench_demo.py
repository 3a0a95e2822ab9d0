"""Does the offline demo learn? Runs configs/demo_cpu.yaml for several seeds and prints eval
accuracy before → after and mean reward in the first vs last fifth of training steps.

    python -m tests.benchmarks.bench_demo [--seeds 0 1 2] [--set key=value ...]

Measured figures only; nothing here asserts them (tests/test_demo.py holds the one slow check).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.demo_run import mean_interval, run_demo


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
            print(
                f"seed {seed}: eval accuracy {100 * r['before']:.1f}% -> {100 * r['after']:.1f}% "
                f"({100 * (r['after'] - r['before']):+.1f} points, 95% interval {100 * low:+.1f} to {100 * high:+.1f}), "
                f"mean reward first fifth {r['early_reward']:.3f} -> last fifth {r['late_reward']:.3f}, "
                f"{r['seconds']:.0f} s",
                flush=True,
            )
    gains = [r["after"] - r["before"] for r in results]
    low, high = mean_interval(gains)
    print(
        f"mean over {len(results)} seeds: {100 * statistics.mean(gains):+.1f} points of eval accuracy "
        f"(95% interval over seeds {100 * low:+.1f} to {100 * high:+.1f}; lowest seed {100 * min(gains):+.1f}), "
        f"mean reward {statistics.mean(r['early_reward'] for r in results):.3f} -> "
        f"{statistics.mean(r['late_reward'] for r in results):.3f}"
    )
    print(
        f"every seed at least +10 points: {'yes' if min(gains) >= 0.10 else 'no'}; mean at least +15 points: "
        f"{'yes' if statistics.mean(gains) >= 0.15 else 'no'}; slowest seed {max(r['seconds'] for r in results):.0f} s"
    )


if __name__ == "__main__":
    main()
