"""The run doctor: for each finding, a run made to show that pathology (real files in the run-directory
contract) and a healthy run that shows none; then real tiny runs made to fail on purpose."""

import json
import math
import random

import pytest

from core.doctor import CHECKS, TRL_LEARNING_RATE, TRL_TEMPERATURE, Run, diagnose, main
from core.rundir import read_config, rollout_record
from core.stats import sign_test
from core.store import RunStore
from tests.conftest import TINY_SETS
from tests.dashboard_fixtures import write_config

STEPS, GROUPS, K, MAX_TOKENS = 30, 4, 8, 64
RIGHT = "7 + 0 = 7\nFinal: 7"  # well formed and right (the ground truth is 7)
WRONG = "7 + 1 = 8\nFinal: 8"
MALFORMED = "seven, I think"


def share(step: int, early: float, late: float) -> float:
    """A figure that moves linearly from `early` at step 1 to `late` at the last step."""
    return early + (late - early) * (step - 1) / (STEPS - 1)


def healthy(step, group, sample, rng):
    """Accuracy rises from 20% to 70%, nearly every completion well formed, lengths steady."""
    if rng.random() < 0.05:
        return MALFORMED, 20
    return (RIGHT if rng.random() < share(step, 0.2, 0.7) else WRONG), 20 + rng.randint(0, 8)


HEALTHY_METRICS = {"entropy": lambda s: 0.8, "learning_rate": lambda s: 1e-5}

PATHOLOGIES = {  # code: (completion at (step, group, sample), TRL's metrics per step, eval (before, after) right)
    "truncation": (
        lambda s, g, k, rng: ("so " * 70, MAX_TOKENS) if rng.random() < share(s, 0.1, 0.8) else healthy(s, g, k, rng),
        {},
        None,
    ),
    "no_signal": (lambda s, g, k, rng: (WRONG, 20) if g < 3 or rng.random() < 0.5 else (RIGHT, 20), {}, None),
    "format_not_learned": (lambda s, g, k, rng: (RIGHT, 20) if rng.random() < 0.05 else (MALFORMED, 20), {}, None),
    "format_only": (
        lambda s, g, k, rng: (WRONG, 20) if rng.random() < share(s, 0.1, 0.9) else (MALFORMED, 20),
        {},
        None,
    ),
    "reward_hacking": (
        lambda s, g, k, rng: ("Final: 8", 3) if rng.random() < share(s, 0.0, 0.8) else healthy(s, g, k, rng),
        {},
        None,
    ),
    "length_explosion": (
        lambda s, g, k, rng: (RIGHT if rng.random() < 0.5 else WRONG, int(share(s, 20, MAX_TOKENS))),
        {},
        None,
    ),
    "length_collapse": (lambda s, g, k, rng: (RIGHT if rng.random() < 0.5 else WRONG, int(share(s, 40, 4))), {}, None),
    "entropy_collapse": (
        lambda s, g, k, rng: (RIGHT if rng.random() < 0.4 else WRONG, 20),
        {"entropy": lambda s: max(0.01, 1 - s / 20)},
        None,
    ),
    "eval_regression": (healthy, {}, (range(0, 20), range(12, 20))),
    "stalled": (
        lambda s, g, k, rng: (RIGHT if rng.random() < 0.4 else WRONG, 20),
        {"learning_rate": lambda s: max(0.0, 1e-5 * (1 - s / 10))},
        None,
    ),
}


def make_run(root, name, completion, metrics=None, evals=None, steps=STEPS, seed=0):
    """A finished run directory: rollouts of `steps` steps (GROUPS prompts × K samples), TRL-style
    metrics.jsonl, run.yaml, status.json and, if given, eval files (which of 30 questions are right)."""
    run_dir = root / name
    (run_dir / "rollouts").mkdir(parents=True)
    rng = random.Random(seed)
    lines, logged = [], []
    for step in range(1, steps + 1):
        rewards = []
        for group in range(GROUPS):
            for sample in range(K):
                text, tokens = completion(step, group, sample, rng)
                prediction = text.rsplit("Final: ", 1)[1] if "Final: " in text else None
                reward = 1.0 if prediction == "7" else 0.1 if prediction else 0.0
                rewards.append(reward)
                lines.append(
                    json.dumps(
                        rollout_record(
                            step=step,
                            prompt_id=f"p{group}",
                            prompt=f"P{group}",
                            question=f"q{group}",
                            completion=text,
                            prediction=prediction,
                            ground_truth="7",
                            reward=reward,
                            rewards={"gsm8k": reward},
                            correct=prediction == "7",
                            rank=0,
                            sample=sample,
                            completion_tokens=tokens,
                            time=step,
                            attempt=1,
                        )
                    )
                )
        logged.append(
            {
                "step": step,
                "time": 1.7e9 + step,
                "reward": sum(rewards) / len(rewards),
                "loss": 0.1,
                **{k: f(step) for k, f in {**HEALTHY_METRICS, **(metrics or {})}.items()},
            }
        )
    (run_dir / "rollouts" / "rollouts.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in logged))
    write_config(run_dir, max_new_tokens=MAX_TOKENS, num_generations=K)
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "global_step": steps, "max_steps": steps}))
    before, after = evals or (range(0, 9), range(0, 15))
    (run_dir / "eval").mkdir()
    for phase, right in (("before", before), ("after", after)):
        (run_dir / "eval" / f"{phase}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "prompt_id": f"e{i}",
                        "question": f"q{i}",
                        "prompt": "P",
                        "ground_truth": "7",
                        "prediction": "7" if i in right else "8",
                        "completion": "Final: 7" if i in right else "Final: 8",
                        "correct": i in right,
                        "completion_tokens": 5,
                    }
                )
                + "\n"
                for i in range(30)
            )
        )
    return run_dir


def findings_of(run_dir):
    store = RunStore(run_dir)
    store.refresh()
    return store, diagnose(store, read_config(run_dir))


def test_a_fix_asks_for_a_stronger_kl_term_than_the_runs_own(tmp_path):
    completion, metrics, evals = PATHOLOGIES["eval_regression"]
    run_dir = make_run(tmp_path, "fell", completion, metrics, evals)
    store, config = RunStore(run_dir), read_config(run_dir)
    store.refresh()
    for grpo, asked in (({}, "grpo.beta=0.04"), ({"beta": 0.0}, "grpo.beta=0.04"), ({"beta": 0.04}, "grpo.beta=0.08")):
        (finding,) = [f for f in diagnose(store, {**config, "grpo": grpo}) if f.code == "eval_regression"]
        assert asked in finding.fix and finding.fix.count("grpo.beta=") == 1, (grpo, finding.fix)


def test_entropy_collapse_asks_for_a_higher_temperature_only_below_trls_default(tmp_path):
    completion, metrics, evals = PATHOLOGIES["entropy_collapse"]
    run_dir = make_run(tmp_path, "narrow", completion, metrics, evals)
    store, config = RunStore(run_dir), read_config(run_dir)
    store.refresh()
    for grpo, asked in (({"temperature": 0.3}, True), ({"temperature": 1.0}, False), ({}, False)):
        (finding,) = [f for f in diagnose(store, {**config, "grpo": grpo}) if f.code == "entropy_collapse"]
        assert ("grpo.temperature=1.0" in finding.fix) == asked, (grpo, finding.fix)
        assert f"train.learning_rate={config['train']['learning_rate'] / 2:g}" in finding.fix


def test_a_plain_trl_runs_fix_halves_the_learning_rate_it_logged():
    import pandas as pd

    from core.doctor import learning_rate, settings

    logged = pd.DataFrame({"learning_rate": [2e-5, 4e-5, 3e-5]}, index=[1, 2, 3])
    assert learning_rate(Run(None, settings({}), logged, pd.DataFrame(), None, None)) == 4e-5  # no run.yaml
    assert learning_rate(Run(None, settings({}), pd.DataFrame(), pd.DataFrame(), None, None)) == TRL_LEARNING_RATE
    assert (
        learning_rate(Run(None, settings({"train": {"learning_rate": 3e-4}}), logged, pd.DataFrame(), None, None))
        == 3e-4
    )


def test_a_fix_suggests_only_what_the_run_does_not_have_already(tmp_path):
    run_dir = make_run(tmp_path, "format", lambda s, g, k, rng: (MALFORMED, 20))  # the format fails
    store, config = RunStore(run_dir), read_config(run_dir)
    store.refresh()
    has = {
        "stop_at_final": True,
        "grpo": {"temperature": 0.7},
        "rewards": [{"name": "gsm8k", "weight": 1.0}, {"name": "format", "weight": 0.5}],
    }
    (finding,) = [f for f in diagnose(store, {**config, **has}) if f.code == "no_signal"]
    assert finding.fix == f"give it more room (max_new_tokens={2 * MAX_TOKENS})"  # what is left to try
    (finding,) = [f for f in diagnose(store, {**config, "max_new_tokens": 1}) if f.code == "no_signal"]
    assert "max_new_tokens=16" in finding.fix  # not 2: room for a Final line at least


def test_a_run_without_a_temperature_samples_at_trls_default():
    from core.config.trl_args import grpo_default

    assert TRL_TEMPERATURE == grpo_default("temperature")  # what lacks("temperature") takes a run's to be
    assert TRL_LEARNING_RATE == grpo_default("learning_rate")  # what a plain TRL run that logged none trained at


def test_a_healthy_run_has_no_findings(tmp_path):
    _, findings = findings_of(make_run(tmp_path, "healthy", healthy))
    assert findings == []


@pytest.mark.parametrize("code", list(PATHOLOGIES))
def test_each_pathology_is_named_with_its_evidence_fix_and_examples(tmp_path, code):
    completion, metrics, evals = PATHOLOGIES[code]
    store, findings = findings_of(make_run(tmp_path, code, completion, metrics, evals))
    found = {f.code: f for f in findings}
    assert code in found, [f.code for f in findings]
    finding = found[code]
    assert finding.severity in ("warning", "problem") and finding.message.endswith(".") and finding.evidence
    figures = [v for value in finding.evidence.values() for v in (value if isinstance(value, list) else [value])]
    assert not any(isinstance(v, float) and math.isnan(v) for v in figures), finding.evidence  # each one measured
    assert "=" in finding.fix or "rewards" in finding.fix  # a config key to change, with its value
    for example in finding.examples:  # each one opens a real rollout (or an eval question)
        if example.get("eval"):
            assert example["prompt_id"].startswith("e")
        else:
            assert store.rollout(example["prompt_id"], example["step"], example["sample"]) is not None
    if code not in ("entropy_collapse", "stalled", "eval_regression"):  # the ones about rollouts show some
        assert finding.examples
    assert [f.severity for f in findings] == sorted(
        (f.severity for f in findings), key=("problem", "warning", "info").index
    )  # worst first


def test_a_late_window_emptied_by_a_refresh_finds_no_degeneration(tmp_path, monkeypatch):
    # the steps and their degenerate shares are two reads: a refresh between (a resume dropping the late
    # steps' rows) leaves the late window without a share, which must not read as a finding
    completion, metrics, evals = PATHOLOGIES["reward_hacking"]
    run_dir = make_run(tmp_path, "reward_hacking", completion, metrics, evals)
    decided = Run.degenerate
    monkeypatch.setattr(Run, "degenerate", lambda run: decided(run).where(lambda s: s.index <= STEPS // 2))
    assert "reward_hacking" not in {f.code for f in findings_of(run_dir)[1]}


def test_a_long_fifth_is_read_every_kth_step_for_the_degenerate_share(tmp_path, monkeypatch):
    # as a run of more than 2,500 steps is read (DEGENERATE_STEPS): here, fifths of 6 steps read from the
    # even-numbered steps, those of the finding's examples too
    import core.doctor

    completion, metrics, evals = PATHOLOGIES["reward_hacking"]
    assert [core.doctor.sampled_every(n) for n in (2500, 2505, 5000, 5005)] == [1, 2, 2, 4]
    monkeypatch.setattr(core.doctor, "DEGENERATE_STEPS", 3)
    assert core.doctor.sampled_every(STEPS) == 2
    run_dir = make_run(tmp_path, "every_2nd", completion, metrics, evals)
    store = RunStore(run_dir)
    store.refresh()
    decided = "SELECT DISTINCT step FROM rollouts WHERE degenerate IS NOT NULL ORDER BY step"
    assert core.doctor.load(store, read_config(run_dir)).degenerate().dropna().index.tolist() == [2, 4, 6, 26, 28, 30]
    assert store._query(decided)["step"].tolist() == [2, 4, 6, 26, 28, 30]  # of steps 1-6 and 25-30, no other
    finding = {f.code: f for f in diagnose(store, read_config(run_dir))}["reward_hacking"]
    assert store._query(decided)["step"].tolist() == [2, 4, 6, 26, 28, 30]  # its examples: of those steps too
    assert finding.examples and {e["step"] for e in finding.examples} <= {26, 28, 30}
    share = store.degenerate_shares(1, STEPS).set_index("step")["degenerate"]  # every step's, decided now
    every_2nd = [round(share[[2, 4, 6]].mean(), 3), round(share[[26, 28, 30]].mean(), 3)]
    whole = [round(share[1:6].mean(), 3), round(share[25:30].mean(), 3)]
    assert finding.evidence["degenerate_share"] == every_2nd != whole


@pytest.mark.parametrize(
    "dataset, harder, easier",
    [
        ({"name": "synthetic", "level": 1}, "harder questions (dataset.level=2)", "easier questions"),
        ({"name": "synthetic", "level": 2}, "harder questions (dataset.level=3)", "easier questions (dataset.level=1)"),
        ({"name": "synthetic", "level": 3}, "harder questions (GSM8K: dataset.name=gsm8k)", "(dataset.level=2)"),
        ({"name": "gsm8k", "level": 1}, "harder questions", "(dataset.name=synthetic, dataset.level=1)"),
        (None, "harder questions", "easier questions"),  # a plain TRL run: its data is not known
    ],
)
def test_the_fix_for_too_hard_or_too_easy_questions_is_a_change_for_the_runs_own_data(dataset, harder, easier):
    from core.doctor import settings

    run = Run(None, settings({"dataset": dataset} if dataset else {}), *[None] * 4)
    assert run.questions(harder=True) == harder and run.questions(harder=False).endswith(easier)


def test_every_check_has_a_pathology():
    names = {check.__name__ for check in CHECKS}
    assert names == set(PATHOLOGIES) - {"length_explosion", "length_collapse"} | {"length_change"}


@pytest.mark.parametrize(
    "text, tokens, why, counted, fix",
    [
        (WRONG, 20, "too hard", "all_wrong_groups", "use easier questions (dataset.level=2)"),  # the run's level 3
        (RIGHT, 20, "too easy", "all_right_groups", "use harder questions (GSM8K: dataset.name=gsm8k)"),
        (MALFORMED, 20, "the format fails", "none_well_formed_groups", "stop_at_final=true"),  # not the difficulty
        (
            MALFORMED,
            MAX_TOKENS,
            "cut off at the token limit",
            "all_truncated_groups",
            f"max_new_tokens={2 * MAX_TOKENS}",
        ),
    ],
    ids=["too_hard", "too_easy", "format", "truncated"],
)
def test_no_signal_says_whether_the_questions_are_too_hard_too_easy_or_the_format_fails(
    tmp_path, text, tokens, why, counted, fix
):
    _, findings = findings_of(make_run(tmp_path, why.replace(" ", "_"), lambda s, g, k, rng: (text, tokens)))
    (finding,) = [f for f in findings if f.code == "no_signal"]
    assert why in finding.message and finding.severity == "problem"
    assert finding.evidence[counted] == 6 * GROUPS and fix in finding.fix
    if text == MALFORMED and tokens < MAX_TOKENS:
        assert "too hard" not in finding.message and "{name: format, weight: 0.5}" in finding.fix
        assert f"max_new_tokens={2 * MAX_TOKENS}" in finding.fix and "grpo.temperature=0.7" in finding.fix
    elif text == MALFORMED:  # cut at the limit: room first, then the Final line
        assert "too hard" not in finding.message and "stop_at_final=true" in finding.fix
    else:
        assert "format" not in finding.message and "stop_at_final" not in finding.fix


def test_a_learning_rate_that_jumps_means_a_schedule_that_started_over(tmp_path):
    completion = PATHOLOGIES["stalled"][0]
    lr = {"learning_rate": lambda s: 1e-5 * (1 - s / 20) if s < 15 else 1e-5 * (1 - (s - 14) / 40)}
    _, findings = findings_of(make_run(tmp_path, "jump", completion, lr))
    (stalled,) = [f for f in findings if f.code == "stalled"]
    assert stalled.steps == (15, 15) and "started over" in stalled.message


def test_a_warm_up_from_zero_is_not_a_schedule_that_started_over(tmp_path):
    # the SmolLM2 preset's 5-step warm-up: 0, then 4e-6, 8e-6, ... up to 2e-5 (a rise of more than half, twice)
    completion = PATHOLOGIES["truncation"][0]
    lr = {"learning_rate": lambda s: 2e-5 * min(1.0, (s - 1) / 5)}
    _, findings = findings_of(make_run(tmp_path, "warm", completion, lr))
    assert "stalled" not in {f.code for f in findings}, [(f.code, f.message) for f in findings]


def test_too_few_steps_is_said_not_guessed(tmp_path):
    import os

    from core.runstate import process_identity

    run_dir = make_run(tmp_path, "short", PATHOLOGIES["truncation"][0], steps=5)  # finished: no more to come
    _, findings = findings_of(run_dir)
    assert [f.code for f in findings] == ["not_enough_steps"]
    assert findings[0].message.startswith("Too few steps: 5 logged, the doctor needs 10")
    (run_dir / "status.json").write_text(json.dumps({"state": "running", **process_identity(os.getpid())}))
    _, findings = findings_of(run_dir)  # a live run: more steps to come
    assert findings[0].message.startswith("Not enough steps yet: 5 logged")


def test_an_eval_dip_within_noise_is_not_a_regression(tmp_path):
    # 3 questions right → wrong, 1 wrong → right: lower, but a sign test cannot tell it from luck
    _, findings = findings_of(make_run(tmp_path, "noise", healthy, evals=([0, 1, 2, 3], [3, 4])))
    assert "eval_regression" not in {f.code for f in findings}
    assert sign_test(3, 1) == pytest.approx(0.625) and sign_test(12, 0) == pytest.approx(2 / 2**12)


@pytest.mark.parametrize(
    "evals, hacking",
    [
        (([0], []), False),  # 1 of 30 right → 0 of 30 while the reward rose (the tiny preset's 1/16 → 0/16): luck
        ((range(0, 12), []), True),  # 12 → 0: a sign test says it is not luck
    ],
    ids=["within_noise", "beyond_noise"],
)
def test_an_eval_fall_beside_a_rising_reward_is_hacking_only_beyond_noise(tmp_path, evals, hacking):
    _, findings = findings_of(make_run(tmp_path, "rising", healthy, evals=evals))
    found = {f.code: f for f in findings}
    assert ("reward_hacking" in found) == hacking
    if hacking:
        assert found["reward_hacking"].evidence["p_value"] < 0.05 and "sign test" in found["reward_hacking"].message


def test_the_cli_prints_the_findings_and_json(tmp_path, capsys):
    run_dir = make_run(tmp_path, "cli", *PATHOLOGIES["truncation"])
    assert main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PROBLEM truncation (steps 1–30):") and "fix: raise max_new_tokens" in out
    assert main([str(run_dir), "--json"]) == 0
    (finding,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "truncation"]
    assert set(finding) == {"code", "severity", "steps", "message", "evidence", "fix", "examples"}
    assert main([str(tmp_path / "nope")]) == 2
    capsys.readouterr()
    (tmp_path / "empty").mkdir()  # a folder, but no run in it: not a run with too few steps
    assert main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'empty'} holds no run (no run.yaml, status.json")
    from core.doctor import settings

    assert settings({"train": {"learning_rate": "1e-5"}, "grpo": {"beta": "4e-2"}, "max_new_tokens": "abc"}) == {
        "train": {"learning_rate": 1e-5},  # YAML reads 1e-5 (no point) as text: a number all the same
        "grpo": {"beta": 0.04},
    }
    config = read_config(run_dir)
    for edited in (  # a run.yaml edited by hand: a setting of the wrong type is read as absent, never a crash
        {"max_new_tokens": "abc"},
        {"max_new_tokens": [3], "num_generations": "four"},
        {"train": "fast", "grpo": {"beta": "x", "temperature": None}},
        {"rewards": "gsm8k", "stop_at_final": "yes"},
    ):
        (run_dir / "run.yaml").write_text(json.dumps({**config, **edited}))
        assert main([str(run_dir)]) == 0, edited
        assert capsys.readouterr().out.startswith(("PROBLEM", "WARNING", "INFO", "no findings"))


# ---- real tiny runs made to fail on purpose ----------------------------------------------------


@pytest.mark.parametrize(
    "sets, code",
    [
        (["max_new_tokens=4", "eval.max_new_tokens=4"], "truncation"),  # no room for a Final: line
        (["dataset.level=3"], "no_signal"),  # two-step problems: the tiny model gets every one wrong
    ],
    ids=["truncation", "no_signal"],
)
def test_real_tiny_runs_that_fail_on_purpose(tiny_model_dir, tmp_path, sets, code, train_here):
    run_dir = tmp_path / code
    exit_code, err = train_here(
        "--config",
        "configs/tiny_cpu.yaml",
        "--set",
        f"train.output_dir={run_dir}",
        *[a for s in [*TINY_SETS, "train.num_train_steps=12", "eval.enabled=false", *sets] for a in ("--set", s)],
    )
    assert exit_code == 0, err[-3000:]
    _, findings = findings_of(run_dir)
    assert code in {f.code for f in findings}, [(f.code, f.message) for f in findings]


@pytest.mark.slow  # it drives the dashboard
def test_the_runs_page_shows_the_findings_and_opens_an_example(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    make_run(tmp_path, "cut", *PATHOLOGIES["truncation"])
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = "cut"
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.value.startswith("**truncation** · steps 1–30:") for e in at.error)
    example = next(b for b in at.button if b.label.startswith("Rollout: prompt "))
    _, prompt_id, _, step, _, sample = example.label.removeprefix("Rollout: ").replace(" · ", " ").split(" ")
    example.click().run()
    assert f"Prompt {prompt_id} · step {step} · sample {sample}" in [h.value for h in at.subheader]
