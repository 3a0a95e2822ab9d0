"""The offline demo learns: GRPO on the tiny model raises greedy eval accuracy and the reward.

Slow (about 3 minutes on a 2-core CPU); it runs in CI. `tests/benchmarks/bench_demo.py` prints
the same figures for several seeds.
"""

import pytest

from tests.benchmarks.bench_demo import run_demo


@pytest.mark.slow
def test_demo_preset_learns(tiny_model_dir, tmp_path):
    result = run_demo(seed=0, out=tmp_path / "demo", sets=[])
    print(result)
    assert result["after"] >= result["before"] + 0.08, result  # at least 8 points of accuracy on 100 questions
    assert result["late_reward"] > result["early_reward"], result
