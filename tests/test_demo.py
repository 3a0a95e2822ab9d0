"""The offline demo learns: GRPO on the tiny model raises greedy eval accuracy and the reward.

Slow (three to six minutes on a 2-core CPU); it runs in CI. It asserts what held on every run of the
preset measured (docs/measured.md: eleven runs of five seeds on two machines, gains of +10 to +45 points,
the mean reward up by 0.18 to 0.26): the gain in eval accuracy beyond the noise of 300 questions (its
paired 95% interval above 0; the lowest of the eleven reached down to +2.5), the mean reward up by more
than 0.1, and nothing wrong by the run doctor. The strong claim (every seed of 0-4 at least +10 points,
+15 on average) is `tests/benchmarks/bench_demo.py`'s, which prints it for several seeds.
"""

import pytest

from core.doctor import diagnose
from core.rundir import read_config
from core.store import RunStore
from tests.demo_run import run_demo


@pytest.mark.slow
def test_demo_preset_learns(tiny_model_dir, tmp_path):
    result = run_demo(seed=0, out=tmp_path / "demo", sets=[])
    print(result)
    assert result["interval"][0] > 0, result  # the paired interval of the gain lies above 0
    assert result["late_reward"] > result["early_reward"] + 0.1, result
    store = RunStore(tmp_path / "demo")
    store.refresh()
    findings = diagnose(store, read_config(tmp_path / "demo"))
    print([(f.code, f.severity, f.message) for f in findings])
    assert not [f for f in findings if f.severity == "problem"]  # the run doctor finds nothing wrong with it
