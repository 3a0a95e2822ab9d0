"""The reward replay on a large run: throughput and peak memory, the store's load apart.

    python -m tests.benchmarks.bench_replay [--rollouts 1000000] [--dir /tmp/simple_grpo_bench_replay]

Writes a synthetic run (tests/fake_run.py) once, then in a fresh process each: the store's cold load
alone, and `python -m core.replay` with a built-in reward (gsm8k_lenient + format) and with a reward of
a user's file. Prints each one's wall time, the replay's rollouts a second and the seconds inside the
rewards (its own report), and the process's peak resident memory. Nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from core import REPO
from tests.fake_run import write_run

USER_REWARD = '''import re

def partial_credit(prompts, completions, answer_final, **kwargs):
    """1.0 right, 0.5 when the right number appears anywhere, else 0."""
    return [1.0 if c.rstrip().endswith(f"Final: {gt}") else 0.5 if re.search(rf"\\b{gt}\\b", c) else 0.0
            for c, gt in zip(completions, answer_final)]
'''
LOAD = "from core.store import RunStore; import sys; s = RunStore(sys.argv[1]); s.refresh(); print(s.count())"


# Runs a command and prints its peak resident memory (KB) last on stderr: each measured alone.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def measured(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of `command`, in a process of its own."""
    start = time.time()
    result = subprocess.run([sys.executable, "-c", PEAK, *command], cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return wall, int(result.stderr.split()[-1]) / 1024, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/simple_grpo_bench_replay"))
    args = parser.parse_args()
    run = args.dir / f"run{args.rollouts}"
    if not run.is_dir():
        print(f"writing {args.rollouts:,} rollouts to {run}", flush=True)
        write_run(run, args.rollouts)
    (args.dir / "user_reward.py").write_text(USER_REWARD)
    size = sum(p.stat().st_size for p in (run / "rollouts").glob("*.jsonl")) / 2**30
    print(f"{args.rollouts:,} rollouts, {size:.2f} GB of JSON lines; each row a fresh process")
    wall, peak, _ = measured([sys.executable, "-c", LOAD, str(run)])
    print(f"store's cold load alone | {wall:.1f} s | peak {peak:,.0f} MB", flush=True)
    for label, rewards in (
        (
            "gsm8k_lenient + format",
            ["--reward", "gsm8k_lenient", "--reward", "format", "--weight", "1", "--weight", "0.5"],
        ),
        ("a user's file: partial_credit", ["--reward", f"{args.dir / 'user_reward.py'}:partial_credit"]),
    ):
        wall, peak, out = measured([sys.executable, "-m", "core.replay", str(run), *rewards, "--json"])
        report = json.loads(out)
        print(
            f"replay, {label} | {wall:.1f} s in all, {report['seconds']:.1f} s replaying "
            f"({report['rollouts_per_second']:,.0f} rollouts a second, {report['reward_seconds']:.1f} s in the "
            f"rewards), changed {report['changed']:,} | peak {peak:,.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
