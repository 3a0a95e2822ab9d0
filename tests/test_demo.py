"""The offline demo learns: GRPO on the tiny model raises greedy eval accuracy and the reward.

Slow (a few minutes on a 2-core CPU); it runs in CI. It asserts what holds on any seed with high
probability (a gain beyond the noise of 300 questions, a rising reward); the strong claim (every seed
of 0-4 at least +10 points) is `tests/benchmarks/bench_demo.py`'s, which prints it for several seeds.
"""

import pytest

from core.doctor import diagnose
from core.runs import read_config
from core.store import RunStore
from tests.demo_run import run_demo


@pytest.mark.slow
def test_demo_preset_learns(tiny_model_dir, tmp_path):
    result = run_demo(seed=0, out=tmp_path / "demo", sets=[])
    print(result)
    assert result["interval"][0] > 0, result  # a gain beyond the noise of 300 questions: its paired 95% interval excludes 0
    assert result["late_reward"] > result["early_reward"], result
    store = RunStore(tmp_path / "demo")
    store.refresh()
    findings = diagnose(store, read_config(tmp_path / "demo"))
    print([(f.code, f.severity, f.message) for f in findings])
    assert not [f for f in findings if f.severity == "problem"]  # the run doctor finds nothing wrong with it
