"""The pre-flight (core/preflight.py) on the built-in tiny model: the demo preset is predicted to learn, a
config that cannot write a Final line is predicted not to (exit 1, the cause named), its figures agree
with TRL's own on the same samples, and bad input is one line and exit 2."""

import json
from dataclasses import fields

import pytest

from core.doctor import Finding
from core.preflight import MIN_SAMPLES, SURE, Report, flat_groups, main, sure_enough, verdict


def preflight_json(capsys, *args) -> tuple[int, dict]:
    code = main(["--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_a_config_that_cannot_write_a_final_line_is_predicted_not_to_learn(tiny_model_dir, capsys):
    code, report = preflight_json(
        capsys, "--config", "configs/demo_cpu.yaml", "--set", "max_new_tokens=3", "--questions", "8"
    )
    assert code == 1 and not report["can_learn"] and report["questions"] == 8 and report["groups_with_signal"] == 0
    assert report["well_formed"] == 0 and report["truncated"] == 1 and report["groups_without_signal"] == 1
    findings = {f["code"]: f for f in report["findings"]}
    assert (
        findings["no_signal"]["severity"] == "problem"
        and "cut off at the token limit" in findings["no_signal"]["message"]
    )
    assert "max_new_tokens=16" in findings["no_signal"]["fix"] and findings["truncation"]["severity"] == "problem"
    main(["--config", "configs/demo_cpu.yaml", "--set", "max_new_tokens=3", "--questions", "8"])  # as text
    out = capsys.readouterr().out
    assert "verdict: this run cannot learn as configured" in out and "no_signal" in out


def test_a_reward_that_fails_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "mine.py").write_text("def f(prompts, completions, **kw):\n    raise RuntimeError('boom')\n")
    rewards = f"rewards=[{{name: {tmp_path}/mine.py:f}}]"
    assert main(["--config", "configs/demo_cpu.yaml", "--set", rewards, "--questions", "2"]) == 2  # not 1: no verdict
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: reward '{tmp_path}/mine.py:f' raised RuntimeError: boom on step 1, prompt ")


def fake_python(tmp_path, script: str) -> str:
    """An executable that stands in for `python -m core.preflight`, as `script` (shell) has it behave."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_a_check_that_crashes_or_is_left_gives_a_line_and_leaves_no_process(tmp_path, monkeypatch):
    import psutil

    import core.preflight
    from core.config import load_config

    cfg = load_config("configs/demo_cpu.yaml")
    crash = "echo 'Traceback (most recent call last):' >&2; echo 'IndexError: list index out of range' >&2; exit 1"
    monkeypatch.setattr(core.preflight.sys, "executable", fake_python(tmp_path, crash))
    assert core.preflight.in_subprocess(cfg) == (None, "IndexError: list index out of range")  # exit 1, no report
    killed = "echo 'preflight: sampled 8 questions' >&2; echo 'a warning' >&2; kill -9 $$"
    monkeypatch.setattr(core.preflight.sys, "executable", fake_python(tmp_path, killed))
    assert core.preflight.in_subprocess(cfg) == (None, "the pre-flight was killed by signal 9 (out of memory?)")

    class Left(Exception):  # what Streamlit raises in a page's script when the page is left
        pass

    def progress(line):
        raise Left(line)

    slow = "echo 'preflight: loading data and model' >&2; exec sleep 60"
    monkeypatch.setattr(core.preflight.sys, "executable", fake_python(tmp_path, slow))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(Left):
        core.preflight.in_subprocess(cfg, progress=progress)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # the check ended with the page


@pytest.mark.parametrize(
    "with_signal, finding, learns, said",
    [
        (0, "problem", False, "this run cannot learn as configured: no sampled group"),
        (1, "problem", True, "a weak signal: only 1 of 12 groups"),  # SmolLM2 at temperature 1.0 learns
        (4, "warning", True, "a weak signal: only 4 of 12 groups"),
        (10, None, True, "a learning signal is expected"),
    ],
)
def test_only_no_signal_at_all_says_the_run_cannot_learn(with_signal, finding, learns, said):
    report = Report(**{f.name: None for f in fields(Report)})
    report.questions, report.groups_with_signal = 12, with_signal
    report.findings = [Finding("no_signal", finding, None, "", {}, "")] if finding else []
    assert report.can_learn == learns and verdict(report).startswith(said)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--config", "configs/no_such.yaml"], "config file 'configs/no_such.yaml' does not exist"),
        (["--config", "configs/demo_cpu.yaml", "--set", "num_generations=1"], "num_generations"),
        (["--config", "configs/demo_cpu.yaml", "--questions", "0"], "--questions 0 must be at least 1"),
        (
            ["--config", "configs/demo_cpu.yaml", "--set", "rewards=[{name: no_module_here:f}]"],
            "there is no module 'no_module_here'",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, said):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and said in err


@pytest.mark.parametrize(
    "flat, groups, k, enough",
    [
        (3, 12, 8, False),  # 96 samples, but a share of 1/4 over 12 groups is known only to about ±0.23
        (0, 12, 8, False),
        (0, 16, 8, True),  # none of 16: [0, 0.19], ±0.097
        (16, 16, 8, True),
        (20, 64, 8, False),
        (20, 80, 8, True),
        (0, 20, 4, False),  # 80 samples: fewer than MIN_SAMPLES
    ],
)
def test_sampling_stops_once_the_share_without_a_signal_is_known_to_a_tenth(flat, groups, k, enough):
    assert sure_enough(flat, groups, k) == enough


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_groups_without_a_signal_are_counted_from_their_advantages_however_trl_scales_them(scale_rewards, aggregation):
    from core.advantage import advantages

    groups = [  # K=4, two reward functions: flat, flat, a signal, flat at another value, a signal in one function
        [[1.0, 0.5]] * 4,
        [[0.0, 0.0]] * 4,
        [[1.0, 0.5], [0.0, 0.5], [0.0, 0.0], [1.0, 0.5]],
        [[0.1, 0.5]] * 4,
        [[0.1, 0.5], [0.1, 0.0], [0.1, 0.5], [0.1, 0.5]],
    ]
    computed = advantages(groups, [1.0, 0.5], scale_rewards, aggregation)  # as TRL computes them (test_advantage)
    assert flat_groups([a for group in computed for a in group], 4) == 3
    # eight rewards of 0.1 (well formed, wrong) in TRL's float32: their mean is not exactly 0.1, and the
    # division by std + 1e-4 makes the rounding -7.45e-05, the same for all eight
    import torch

    tenths = torch.tensor([0.1] * 8)
    rounded = ((tenths - tenths.mean()) / (tenths.std() + 1e-4)).tolist()
    assert rounded[0] != 0 and flat_groups(rounded + [1.0, -1.0] * 4, 8) == 1


def test_the_demo_preset_is_predicted_to_learn_and_check_before_launch_says_it_in_the_forms_words(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    import types

    import core.config
    import core.preflight
    from core.config import load_config
    from tests.conftest import ROOT
    from tests.test_dashboard import open_page

    # the sampling rule, whatever the machine's pace: no stop for time (a busy machine hit it after 16 groups)
    monkeypatch.setattr(core.preflight, "SAMPLING_SECONDS", float("inf"))
    code, report = preflight_json(capsys, "--config", "configs/demo_cpu.yaml")
    assert code == 0 and report["can_learn"] and report["signal"] == "expected" and report["findings"] == []
    assert report["well_formed"] > 0.9 and 0 < report["correct"] < 1 and report["truncated"] == 0
    assert report["groups_without_signal"] < 0.6 and report["mean_abs_advantage"] > 0.1
    # sampled until the share of groups without a signal was known to ±0.1
    low, high = report["sure"]["groups_without_signal"]
    assert report["samples"] >= MIN_SAMPLES and (high - low) / 2 <= SURE
    assert report["samples"] == 8 * report["questions"]
    # TRL's own count of groups with equal rewards, on the same samples, says the same
    assert report["groups_without_signal"] == pytest.approx(report["trl"]["frac_reward_zero_std"], abs=1e-4)
    assert report["examples"]["best_of_signal"]["reward"] == max(report["examples"]["best_of_signal"]["group_rewards"])
    assert len(set(report["examples"]["no_signal"]["group_rewards"])) == 1
    # the time: 700 steps of a measured step, two evals and the saves on top of the start
    assert 0 < report["seconds_per_generation"] < report["seconds_per_step"]
    assert report["minutes_total"] * 60 > 700 * report["seconds_per_step"] + report["seconds_to_start"]
    assert report["peak_memory_mb"] > 100

    # the Launch page's button runs the same command (a process of its own) on the form's settings
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")  # transformers then prints to stdout, where the report goes
    at = open_page("launch")
    at.selectbox[0].set_value("demo_cpu.yaml").run()
    at.number_input(key="demo_cpu.yaml:tokens").set_value(3)  # no room for a Final line
    at.button[2].click().run(timeout=300)  # Check before launch
    assert not at.exception and [s.label for s in at.status] == ["Checked before launch"]
    assert [e.value for e in at.error][0] == (
        "This run cannot learn as configured: no sampled group got rewards that differ (see the findings)."
    )
    fixes = " ".join(e.value for e in at.error[1:])
    assert "'Max new tokens' = 16" in fixes and "max_new_tokens" not in fixes  # the findings in the form's words
    assert "hit 'Max new tokens' (3)" in fixes
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Groups without a signal"] == "100%" and metrics["Cut at Max new tokens"] == "100%"
    assert list(tmp_path.iterdir()) == []  # a check launches nothing and writes no run folder
    # back at 16 tokens the form is the demo preset: its command's report above is what the button shows
    # (the pre-flight's process, run once above, is not started again for the same config)
    asked = []
    monkeypatch.setattr(core.preflight, "in_subprocess", lambda cfg, **_: asked.append(cfg.to_dict()) or (report, ""))
    # a default run folder is named by the second it is made: one clock for the form and the preset below
    monkeypatch.setattr(core.config, "time", types.SimpleNamespace(strftime=lambda _: "20261207-100000"))
    at.number_input(key="demo_cpu.yaml:tokens").set_value(16)
    at.button[2].click().run(timeout=300)
    assert not at.exception and asked == [load_config(ROOT / "configs" / "demo_cpu.yaml").to_dict()]
    assert [s.value for s in at.success][0].startswith("A learning signal is expected. ")
    assert {"A training step", "The whole run", "Peak memory"} <= {m.label for m in at.metric}
    at.button[0].click().run()  # Check: the settings are valid; the report of other settings goes
    assert "The settings are valid." in [s.value for s in at.success] and "Before launch" not in [
        h.value for h in at.subheader
    ]


def test_a_check_that_could_not_run_names_the_setting_in_the_forms_words(tmp_path, monkeypatch):
    import core.preflight
    from tests.test_dashboard import open_page

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    why = "config key 'grpo.temperature' has value -1.0, expected greater than 0; or max_new_tokens=32"
    monkeypatch.setattr(core.preflight, "in_subprocess", lambda cfg, **_: (None, why))
    at = open_page("launch")
    at.selectbox[0].set_value("tiny_cpu.yaml").run()
    at.button[2].click().run(timeout=60)  # Check before launch
    assert not at.exception and [e.value.replace("\\", "") for e in at.error] == [  # as text: escaped for markdown
        "The check could not run: config key 'temperature (Advanced)' has value -1.0, expected greater than 0; or "
        "'Max new tokens' = 32"
    ]
