"""LoRA against full fine-tuning on a CPU: the same run of configs/smollm2_cpu.yaml, once training every
weight and once LoRA adapters (configs/smollm2_lora_cpu.yaml's peft: block), side by side.

    python -m tests.benchmarks.bench_lora [--steps 4]

Prints for each: the median step time (TRL's `step_time`, the first step left out), the trainable
parameters, and the peak RSS of the training process; evals are off, nothing is saved. Run it alone:
on two cores another job beside it changes both figures. Nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from core import REPO as ROOT


def lora_sets() -> list[str]:
    """The LoRA preset's peft: block and learning rate, as --set items."""
    preset = yaml.safe_load((ROOT / "configs" / "smollm2_lora_cpu.yaml").read_text())
    return [f"peft.{key}={json.dumps(value)}" for key, value in preset["peft"].items()] + [
        f"train.learning_rate={preset['train']['learning_rate']}"
    ]


def measure(label: str, steps: int, extra: list[str], out: Path) -> dict:
    sets = [
        f"train.num_train_steps={steps}",
        "eval.enabled=false",
        "train.save_steps=0",
        *extra,
        f"train.output_dir={out}",
    ]
    start = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.train",
            "--config",
            "configs/smollm2_cpu.yaml",
            *[a for s in sets for a in ("--set", s)],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak RSS (ru_maxrss: KiB on Linux)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed:\n{log[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [m["step_time"] for m in metrics if "step_time" in m][1:]
    trainable = next((line for line in log.splitlines() if "trainable params" in line), "all of them")
    return {
        "label": label,
        "step": statistics.median(times),
        "rss_mb": usage.ru_maxrss / 1024,
        "wall": time.time() - start,
        "trainable": trainable.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    print(f"configs/smollm2_cpu.yaml, {args.steps} steps each; LoRA: {' '.join(lora_sets())}", flush=True)
    results = [
        measure("full fine-tuning", args.steps, [], folder / "full"),
        measure("LoRA", args.steps, lora_sets(), folder / "lora"),
    ]
    for r in results:
        print(
            f"{r['label']:<18} median step {r['step']:.1f} s, peak RSS {r['rss_mb']:,.0f} MB, "
            f"wall {r['wall']:.0f} s; trainable: {r['trainable']}"
        )
    full, lora = results
    print(f"LoRA / full: step time {lora['step'] / full['step']:.2f}x, peak RSS {lora['rss_mb'] / full['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
