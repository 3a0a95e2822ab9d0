"""docs/first-hour.md's custom reward runs as written: its module and its config lines train a real run
(the tiny model), which records the reward's own values, and the replay scores the run with it."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, TINY_SETS, run_cli

pytestmark = pytest.mark.slow  # it trains


def blocks(section: str) -> dict[str, str]:
    """The first python and yaml code blocks of a section of docs/first-hour.md."""
    text = (ROOT / "docs" / "first-hour.md").read_text()
    part = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return {lang: re.search(rf"```{lang}\n(.*?)```", part, re.S).group(1) for lang in ("python", "yaml")}


def test_the_custom_reward_example_trains_and_replays_as_written(tiny_model_dir, tmp_path):
    example = blocks("My own reward")
    (tmp_path / "my_rewards.py").write_text(example["python"])  # "a file my_rewards.py" on the PYTHONPATH
    rewards = yaml.safe_load(example["yaml"])["rewards"]
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_cli(
        "--config",
        "configs/tiny_cpu.yaml",
        *[a for s in TINY_SETS for a in ("--set", s)],
        "--set",
        f"rewards={json.dumps(rewards)}",
        "--set",
        "eval.enabled=false",
        "--set",
        f"train.output_dir={run_dir}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("my_rewards", tmp_path / "my_rewards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rollouts = [json.loads(line) for line in (run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
    tokens = {
        (t["step"], t["prompt_id"], t["sample"]): t["ids"]
        for t in map(json.loads, (run_dir / "tokens" / "tokens.jsonl").read_text().splitlines())
    }
    name = rewards[1]["name"]
    for r in rollouts:  # what the run recorded is the function's own value on what it sampled
        ids = tokens[(r["step"], r["prompt_id"], r["sample"])]
        expected = module.right_and_brief([r["prompt"]], [r["completion"]], [ids], [r["ground_truth"]])[0]
        assert r["rewards"][name] == pytest.approx(expected)
        assert r["reward"] == pytest.approx(r["rewards"]["gsm8k"] + 0.5 * expected)
    replay = subprocess.run(
        [sys.executable, "-m", "core.replay", str(run_dir), "--reward", name, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert json.loads(replay.stdout)["rollouts"] == len(rollouts)
