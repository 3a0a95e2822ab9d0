"""The offline demo learns: GRPO on the tiny model raises greedy eval accuracy and the reward.

Slow (about 4 minutes on a 2-core CPU); it runs in CI. `tests/benchmarks/bench_demo.py` prints
the same figures for several seeds.
"""

import pytest

from core.doctor import diagnose
from core.runs import read_config
from core.store import RunStore
from tests.benchmarks.bench_demo import run_demo


@pytest.mark.slow
def test_demo_preset_learns(tiny_model_dir, tmp_path):
    result = run_demo(seed=0, out=tmp_path / "demo", sets=[])
    print(result)
    assert result["after"] >= result["before"] + 0.10, result  # at least 10 points of accuracy on 300 questions
    assert result["interval"][0] > 0, result  # and more than the noise of 300 questions: its 95% interval excludes 0
    assert result["late_reward"] > result["early_reward"], result
    store = RunStore(tmp_path / "demo")
    store.refresh()
    findings = diagnose(store, read_config(tmp_path / "demo"))
    print([(f.code, f.severity, f.message) for f in findings])
    assert not [f for f in findings if f.severity == "problem"]  # the run doctor finds nothing wrong with it
