"""Reward replay (core/replay.py): its counts against a re-scoring in plain Python, on this project's runs
and a plain TRL folder; what it passes a reward; each bad input one line and exit 2, the run untouched."""

import contextlib
import errno
import json
import os
from statistics import fmean, stdev

import pytest

from core import replay as replay_module
from core.replay import main, reward_specs, run_replay, saved
from core.rewards import format_reward, gsm8k_lenient_reward
from core.rundir import replay_path, replay_report_path, rollout_record, rollouts_path
from core.runstate import lock_run_dir
from tests.dashboard_fixtures import make_runs, write_config
from tests.fake_run import write_run
from tests.test_trl_runs import write_trl_folder


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    write_run(folder, 1200, ranks=2, prompts=40, ramp=40)  # 16 prompts a step, none twice
    write_config(folder, rewards=[{"name": "gsm8k", "weight": 1.0}])
    return folder


def lines(folder):
    return [
        json.loads(line)
        for path in sorted((folder / "rollouts").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def sign(x: float) -> int:
    return 0 if abs(x) < 1e-9 else (1 if x > 0 else -1)


def rescored(records, rewards):
    """The replay's figures, computed here one record at a time: changed samples, per step (mean before,
    mean after, share of groups without a signal before and after), and groups whose rewards' signs
    against their group's mean flip (the sign of TRL's advantage, whatever it divides by)."""
    after = [
        sum(w * fn([r["prompt"]], [r["completion"]], answer_final=[r["ground_truth"]])[0] for fn, w in rewards)
        for r in records
    ]
    changed = sum(abs(r["reward"] - a) > 1e-9 for r, a in zip(records, after))
    groups = {}
    for r, a in zip(records, after):
        groups.setdefault((r["step"], r["prompt_id"]), []).append((r["reward"], a))
    steps, flips = {}, 0
    for (step, _), pairs in sorted(groups.items()):
        before_mean, after_mean = fmean(b for b, _ in pairs), fmean(a for _, a in pairs)
        flips += any(sign(b - before_mean) * sign(a - after_mean) < 0 for b, a in pairs)
        s = steps.setdefault(step, {"before": [], "after": [], "flat_before": [], "flat_after": []})
        s["before"] += [b for b, _ in pairs]
        s["after"] += [a for _, a in pairs]
        s["flat_before"].append(len({b for b, _ in pairs}) == 1)
        s["flat_after"].append(len({a for _, a in pairs}) == 1)
    per_step = [
        (step, fmean(s["before"]), fmean(s["after"]), fmean(s["flat_before"]), fmean(s["flat_after"]))
        for step, s in sorted(steps.items())
    ]
    return changed, per_step, flips, len(groups)


def figures(report):
    return (
        report.changed,
        [
            (s["step"], s["mean_before"], s["mean_after"], s["no_signal_before"], s["no_signal_after"])
            for s in report.steps
        ],
        report.sign_flips,
        report.groups,
    )


def test_replay_agrees_with_a_rescoring_in_plain_python(run):
    report = run_replay(run, reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5]))
    expected = rescored(lines(run), [(gsm8k_lenient_reward, 1.0), (format_reward, 0.5)])
    assert report.rollouts == 1200 and figures(report)[0] == expected[0] and report.changed > 0
    assert report.sign_flips == expected[2] and report.sign_flips > 0 and report.groups == expected[3]
    assert [x for step in figures(report)[1] for x in step] == pytest.approx([x for step in expected[1] for x in step])
    kept = {(r["step"], r["prompt_id"], r["sample"]) for r in report.changed_rows}
    assert len(kept) == report.changed  # fewer than CHANGED_KEPT: every changed row, each once


def test_each_weight_on_the_command_line_is_that_of_the_reward_before_it(run, capsys):
    assert main([str(run), "--reward", "gsm8k_lenient", "--reward", "format", "--weight", "0.5", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["rewards"] == [{"name": "gsm8k_lenient", "weight": 1.0}, {"name": "format", "weight": 0.5}]
    expected = rescored(lines(run), [(gsm8k_lenient_reward, 1.0), (format_reward, 0.5)])
    assert said["changed"] == expected[0]  # as plain Python scores them
    assert main([str(run), "--reward", "gsm8k_lenient", "--weight", "2", "--reward", "format", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewards"][0] == {"name": "gsm8k_lenient", "weight": 2.0}


def test_under_normalize_then_sum_each_reward_is_normalised_in_its_group_before_the_sum(tmp_path):
    """TRL's multi_objective_aggregation=normalize_then_sum: an advantage's sign is that of the weighted sum
    of each function's reward against its group's mean over its group's std (its batch mean is 0), which
    can differ from the sign of the weighted total against its mean."""
    folder = tmp_path / "run"
    write_run(folder, 1200, ranks=2, prompts=40, ramp=40)
    write_config(
        folder, rewards=[{"name": "gsm8k", "weight": 1.0}], grpo={"multi_objective_aggregation": "normalize_then_sum"}
    )
    records, rewards = lines(folder), [(gsm8k_lenient_reward, 1.0), (format_reward, 2.0)]
    scored = [
        [fn([r["prompt"]], [r["completion"]], answer_final=[r["ground_truth"]])[0] for fn, _ in rewards]
        for r in records
    ]
    groups = {}
    for r, values in zip(records, scored):
        groups.setdefault((r["step"], r["prompt_id"]), []).append((r["reward"], values))

    def normalised(column):
        mean, std = fmean(column), (stdev(column) if len(column) > 1 else 0.0)
        return [(x - mean) / (std + 1e-4) for x in column]

    flips = 0
    for pairs in groups.values():
        before = normalised([b for b, _ in pairs])
        after = [
            sum(w * z for (_, w), z in zip(rewards, zs))
            for zs in zip(*(normalised(list(c)) for c in zip(*(v for _, v in pairs))))
        ]
        flips += any(sign(b) * sign(a) < 0 for b, a in zip(before, after))
    report = run_replay(folder, reward_specs(["gsm8k_lenient", "format"], [1.0, 2.0]))
    assert report.sign_flips == flips != rescored(records, rewards)[2]  # not the weighted total's flips


def test_replay_with_the_runs_own_reward_changes_nothing(run):
    report = run_replay(run, reward_specs(["gsm8k"], []))
    assert report.rollouts == len(lines(run)) and len(report.steps) == len({r["step"] for r in lines(run)})
    assert (report.changed, report.sign_flips, report.changed_rows) == (0, 0, [])
    assert all(s["mean_before"] == s["mean_after"] for s in report.steps)


def test_a_run_yaml_edited_by_hand_reads_its_settings_that_fit_and_defaults_for_the_rest(run):
    from core.advantage import run_settings
    from core.rundir import read_config

    defaults = run_settings({})
    edited = {  # each of the wrong kind: read as absent
        "train": "fast",
        "grpo": {"scale_rewards": "weird", "multi_objective_aggregation": 3, "beta": "x", "epsilon": [0.1]},
        "rewards": [{"name": "gsm8k", "weight": "heavy"}, "format", {"weight": 2}],
        "max_new_tokens": "abc",
    }
    assert run_settings(edited) == {**defaults, "weights": {"gsm8k": 1.0}}
    assert run_settings({"grpo": {"scale_rewards": "none", "beta": "4e-2", "loss_type": "grpo"}}) == {
        **defaults,
        "scale_rewards": "none",
        "beta": 0.04,  # YAML reads 4e-2 (no point) as text; the config reads it as the number
        "loss_type": "grpo",
    }
    (run / "run.yaml").write_text(json.dumps({**read_config(run), **edited}))
    report = run_replay(run, reward_specs(["gsm8k"], []))  # the run's rewards read as the defaults say
    assert report.rollouts == 1200 and report.changed == 0


def test_replay_streams_whole_steps_and_gives_the_same_report_in_small_batches(run, monkeypatch):
    whole = run_replay(run, reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5]))
    monkeypatch.setattr(replay_module, "BATCH_ROWS", 50)  # a batch of a few steps (a step holds 128)
    batched = run_replay(run, reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5]))
    assert figures(batched) == figures(whole) and batched.changed_rows == whole.changed_rows


def test_a_reward_gets_what_trl_passes(run, tmp_path):
    seen = []
    (tmp_path / "probe.py").write_text(
        "import json, os\n"
        "def probe(prompts, completions, trainer_state, question, answer_final, prompt_id, **kw):\n"
        "    with open(os.environ['PROBE'], 'a') as f:\n"
        "        f.write(json.dumps([trainer_state.global_step, len(prompts), prompts[0][:40], answer_final[0],\n"
        "                            prompt_id[0], question[0][:20], sorted(kw)]) + '\\n')\n"
        "    return [0.0] * len(completions)\n"
    )
    os.environ["PROBE"] = str(tmp_path / "seen.jsonl")
    try:
        run_replay(run, reward_specs([f"{tmp_path / 'probe.py'}:probe"], []))
    finally:
        del os.environ["PROBE"]
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    records = lines(run)
    first = [r for r in records if r["step"] == 1]
    assert len(seen) == len({r["step"] for r in records})  # one call per step, as TRL scores a generation batch
    state, count, prompt, truth, pid, question, others = seen[0]
    assert state == 0 and count == len(first)  # TRL's global_step before the update step 1 is 0
    group = sorted((r for r in first), key=lambda r: (r["prompt_id"], r["sample"]))[0]
    assert (prompt, truth, pid, question) == (
        group["prompt"][:40],
        group["ground_truth"],
        group["prompt_id"],
        group["question"][:20],
    )  # every sample gets its group's prompt back
    assert others == ["completion_ids", "log_extra", "log_metric"]  # completion_ids: None, no tokens/ here


def test_replay_on_a_plain_trl_folder_scores_its_text_and_names_what_it_lacks(tmp_path):
    folder = tmp_path / "trl"
    write_trl_folder(folder, 5)
    report = run_replay(folder, reward_specs(["format"], []))  # no completion ends with a Final line
    assert report.rollouts == 40 and report.changed == 20  # accuracy_reward 1.0 → 0 on half of them
    with pytest.raises(
        replay_module.ConfigError,
        match="reads answer_final, and this run has no column 'answer_final': a plain TRL folder records only",
    ):
        run_replay(folder, reward_specs(["gsm8k"], []))
    (tmp_path / "ids.py").write_text(
        "def f(prompts, completions, completion_ids, **kw):\n    return [0.0] * len(completions)\n"
    )
    with pytest.raises(replay_module.ConfigError, match="reads completion_ids, and this run recorded no sampled token"):
        run_replay(folder, reward_specs([f"{tmp_path}/ids.py:f"], []))  # it needs them, and there are none
    lengths = run_replay(folder, reward_specs(["length_penalty"], []))  # no tokens/: completion_ids=None, its default
    assert lengths.rollouts == lengths.changed == len(lengths.changed_rows) == 40  # each logged 1.0 or 0
    assert all(row["after"] == pytest.approx(-len(row["completion"]) / 4 / 1000) for row in lengths.changed_rows)
    with pytest.raises(replay_module.ConfigError, match="is a plain TRL folder, which this project only reads"):
        run_replay(folder, reward_specs(["format"], []), save_as="mine")  # its folder is TRL's
    assert not (folder / "replays").exists()


def test_save_writes_the_scores_and_the_report_the_rewards_page_reads(run):
    report = run_replay(run, reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5]), save_as="lenient")
    scores = [json.loads(line) for line in replay_path(run, "lenient").read_text().splitlines()]
    assert len(scores) == 1200 and set(scores[0]) == {"step", "prompt_id", "sample", "rank", "reward", "rewards"}
    by_key = {(s["step"], s["prompt_id"], s["sample"]): s for s in scores}
    for r in lines(run)[:50]:
        s = by_key[(r["step"], r["prompt_id"], r["sample"])]
        assert s["rewards"] == {
            "gsm8k_lenient": gsm8k_lenient_reward([], [r["completion"]], [r["ground_truth"]])[0],
            "format": format_reward([], [r["completion"]])[0],
        }
        assert s["reward"] == pytest.approx(s["rewards"]["gsm8k_lenient"] + 0.5 * s["rewards"]["format"])
    shown = saved(run, "lenient")
    assert shown["changed"] == report.changed and shown["rewards"][1] == {"name": "format", "weight": 0.5}


BAD_REWARDS = {
    "raises": (
        "def f(prompts, completions, **kw):\n    return [1 / (('Final: 7' in c) - 1) for c in completions]\n",
        "reward '{path}:f' raised ZeroDivisionError: division by zero on step {step}, prompt {pid}, sample",
    ),
    "count": ("def f(prompts, completions, **kw):\n    return [0.0]\n", "reward '{path}:f' returned 1 values for"),
    "text": (
        "def f(prompts, completions, **kw):\n    return ['high'] * len(completions)\n",
        "reward '{path}:f' returned 'high' (str) for step 1, prompt",
    ),
    "key": (
        "def f(prompts, completions, **kw):\n    return [kw['difficulty'] for c in completions]\n",
        "reward '{path}:f' raised KeyError 'difficulty' (this run has no column 'difficulty') on step 1",
    ),
    "one number": (  # not a list: the reward is named, not the code that reads its values
        "def f(prompts, completions, **kw):\n    return 1.0\n",
        "reward '{path}:f' returned 1.0 (float) for the",
    ),
    "exits": (  # sys.exit() in a reward: said like any other exception, never a silent end
        "import sys\ndef f(prompts, completions, **kw):\n    if any('Final: 7' in c for c in completions):\n"
        "        sys.exit(3)\n    return [0.0] * len(completions)\n",
        "reward '{path}:f' raised SystemExit (sys.exit(3)) on step {step}, prompt {pid}, sample",
    ),
    "infinite": (
        "def f(prompts, completions, **kw):\n    return [float('inf') if 'Final: 7' in c else 0.0 for c in completions]\n",
        "reward '{path}:f' returned inf for step {step}, prompt {pid}, sample",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_REWARDS))
def test_a_reward_that_fails_is_one_line_naming_the_first_input_and_the_run_is_untouched(run, tmp_path, capsys, bad):
    code, said = BAD_REWARDS[bad]
    path = tmp_path / f"{bad}.py"
    path.write_text(code)
    first = next(
        r
        for r in sorted(lines(run), key=lambda r: (r["step"], r["prompt_id"], r["sample"]))
        if "Final: 7" in r["completion"]
    )
    before = sorted(p.name for p in run.rglob("*"))
    assert main([str(run), "--reward", f"{path}:f", "--save", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said.format(path=path, step=first["step"], pid=first["prompt_id"]) in err
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing saved, not even a part


@pytest.mark.parametrize(
    "args, said",
    [
        ([], "name a reward to replay with"),
        (["--reward", "no_such"], "unknown reward 'no_such'"),
        (["--reward", "nomodule_here:f"], "there is no module 'nomodule_here'"),
        (["--reward", "missing.py:f"], "there is no file 'missing.py'"),
        (["--reward", "gsm8k", "--weight", "1", "--weight", "2"], "two --weight for --reward gsm8k"),
        (["--weight", "0.5", "--reward", "gsm8k"], "--weight 0.5 comes before any --reward"),
        (["--reward", "gsm8k", "--save", "///"], "--save name '///' has no usable characters"),
        (["--reward", "gsm8k", "--weight", "1e308"], "the weighted rewards of step 1 are too large to add up"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, capsys, args, said):
    assert main([str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and not (run / "replays").exists()


def test_a_replay_that_cannot_be_saved_is_one_line(run, capsys, monkeypatch):
    (run / "replays").write_text("a file where the folder goes")
    assert main([str(run), "--reward", "format", "--save", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: could not save the replay in {run / 'replays'} (File exists): replay without --save"
    )
    assert (run / "replays").read_text() == "a file where the folder goes"
    (run / "replays").unlink()

    @contextlib.contextmanager
    def a_full_disk(path):  # the scores' file takes no more bytes
        class Full:
            def writelines(self, lines):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        yield Full()

    monkeypatch.setattr(replay_module, "replaced", a_full_disk)
    assert main([str(run), "--reward", "format", "--save", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: could not save the replay in {run / 'replays'} (No space left on device): replay without --save"
    )
    assert not (run / "replays").exists()


def test_logged_rewards_too_large_to_add_up_are_one_line(run, capsys):
    path = next((run / "rollouts").glob("*.jsonl"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records[:8]:  # a step whose logged rewards overflow a float when added up
        r["reward"] = 1e308
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(run), "--reward", "format"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the logged rewards of step 1 are too large to add up" in err


def test_a_saved_replay_is_named_where_it_is_and_never_replaced(run, capsys):
    assert main([str(run), "--reward", "gsm8k_lenient", "--save", "../my replay", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rollouts"] == 1200  # stdout is the report alone
    assert f"replay: saved as 'my_replay': {replay_path(run, 'my_replay')}" in err  # the name made safe, said
    report = replay_report_path(run, "my_replay").read_text()
    assert main([str(run), "--reward", "format", "--save", "my_replay"]) == 2  # the same name again
    assert "a replay named 'my_replay' is saved already" in capsys.readouterr().err
    assert replay_report_path(run, "my_replay").read_text() == report  # the first one kept


def test_what_a_reward_prints_stays_out_of_the_json_and_figures_read_plainly(run, tmp_path, capsys):
    path = tmp_path / "talks.py"
    path.write_text(
        "def f(prompts, completions, **kw):\n    print('scoring', len(completions))\n"
        "    return [0.1 * 3 if 'Final: 7' in c else None for c in completions]\n"
    )
    assert main([str(run), "--reward", f"{path}:f", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["changed"] > 0 and "scoring" in err
    assert main([str(run), "--reward", f"{path}:f"]) == 0
    changed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("changed: step")]
    assert changed and all(" → 0.3  (" in line or " → none  (" in line for line in changed), changed[:3]


def test_a_folder_without_rollouts_or_a_live_run_is_refused(run, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--reward", "gsm8k"]) == 2
    assert "no run folder at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--reward", "gsm8k"]) == 2
    assert "has no rollouts to replay" in capsys.readouterr().err
    lock = lock_run_dir(run)  # a live trainer holds its folder: only it writes there
    try:
        assert main([str(run), "--reward", "gsm8k", "--save", "x"]) == 2
        assert "is still training" in capsys.readouterr().err and not (run / "replays").exists()
        assert main([str(run), "--reward", "gsm8k", "--json"]) == 0  # reading it is fine
        assert json.loads(capsys.readouterr().out)["rollouts"] == 1200
    finally:
        os.close(lock)


def test_a_module_function_from_where_the_command_runs(run, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_rewards.py").write_text(
        "def half(prompts, completions, **kw):\n    return [0.5] * len(completions)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main([str(run), "--reward", "my_rewards:half", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] == sum(r["reward"] != 0.5 for r in lines(run))
    assert all(s["no_signal_after"] == 1.0 for s in report["steps"])  # one reward for all: no signal anywhere
    assert not replay_report_path(run, "x").exists()


def test_a_sample_without_a_reward_is_left_out_of_its_groups_signal(tmp_path):
    from tests.test_store import RECORD  # prompt p, "Final: 1", ground truth 1: the strict reward's 1.0

    folder = tmp_path / "run"
    rollouts_path(folder).parent.mkdir(parents=True)
    rewards = [1.0, None, 1.0, 1.0]  # sample 1: no reward function scored it
    rollouts_path(folder).write_text(
        "".join(
            json.dumps({**RECORD, "step": 1, "sample": i, "reward": r, "rewards": {"gsm8k": r}}) + "\n"
            for i, r in enumerate(rewards)
        )
    )
    write_config(folder, rewards=[{"name": "gsm8k", "weight": 1.0}])
    (step,) = run_replay(folder, reward_specs(["gsm8k"], [])).steps
    assert step["no_signal_before"] == step["no_signal_after"] == 1.0  # 1.0, none, 1.0, 1.0: flat, as in TRL


def test_completion_ids_are_the_sampled_ones_from_tokens(tmp_path):
    folder = tmp_path / "run"
    records = [
        rollout_record(
            step=1,
            prompt_id="p",
            prompt="P",
            question="Q",
            completion=f"Final: {i}",
            prediction=str(i),
            ground_truth="1",
            reward=float(i == 1),
            rewards={"gsm8k": 1.0},
            correct=i == 1,
            rank=0,
            sample=i,
            completion_tokens=i + 2,
            time=1.0,
            attempt=1,
        )
        for i in range(4)
    ]
    rollouts_path(folder).parent.mkdir(parents=True)
    rollouts_path(folder).write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "tokens").mkdir()
    (folder / "tokens" / "tokens.jsonl").write_text(
        "".join(  # an earlier attempt's ids are superseded
            json.dumps(
                {"step": 1, "prompt_id": "p", "sample": i, "attempt": a, "ids": list(range(i + 2 + 10 * (a == 0)))}
            )
            + "\n"
            for a in (0, 1)
            for i in range(4)
        )
    )
    write_config(folder)
    report = run_replay(folder, reward_specs(["length_penalty"], []))
    assert [r["after"] for r in sorted(report.changed_rows, key=lambda r: r["sample"])] == [
        -(i + 2) / 1000 for i in range(4)
    ]


@pytest.mark.slow
def test_the_rewards_page_replays_and_shows_the_same_counts(tmp_path, monkeypatch):
    from streamlit.proto.Metric_pb2 import Metric

    from tests.test_dashboard import open_page, shown

    runs = tmp_path / "runs"
    monkeypatch.setenv("RUNS_DIR", str(runs))
    make_runs(runs)
    expected = run_replay(runs / "learning", reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5]))
    at = open_page("rewards", run="learning")
    at.multiselect(key="replay_rewards").set_value(["gsm8k_lenient", "format"])
    at.text_input(key="replay_weights").set_value("1, 0.5")
    at.text_input(key="replay_name").set_value("lenient")
    at.button(key="FormSubmitter:replay-Replay").click().run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples whose reward changed"] == f"{expected.changed:,}"
    assert metrics["Groups whose advantages change sign"] == f"{expected.sign_flips:,}"
    flat = [s["no_signal_after"] - s["no_signal_before"] for s in expected.steps]
    change = {m.label: m.proto.delta for m in at.metric}["Groups without a signal"]
    assert change == f"{100 * sum(flat) / len(flat):+.1f} points"  # percentage points, not '+0.4% points'
    arrows = {m.label: m.proto.direction for m in at.metric}  # a share and a count, not changes: no arrow
    none = Metric.MetricDirection.NONE
    assert arrows["Samples whose reward changed"] == arrows["Groups whose advantages change sign"] == none
    assert saved(runs / "learning", "lenient")["changed"] == expected.changed  # saved as named
    assert "Saved as lenient: replays/lenient.jsonl, and its report replays/lenient.json" in [
        shown(s.value) for s in at.success
    ]
    assert at.selectbox(key="saved_replay:learning").value == "lenient"  # listed at once, as the replay shown
    at.text_input(key="replay_weights").set_value("abc")
    at.button(key="FormSubmitter:replay-Replay").click().run()  # a replay that fails: what was shown stays, picked
    assert at.error and at.selectbox(key="saved_replay:learning").value == "lenient"
    at.run()  # and on the next rerun too
    assert at.selectbox(key="saved_replay:learning").value == "lenient"
    assert {m.label: m.value for m in at.metric}["Samples whose reward changed"] == f"{expected.changed:,}"
    at = open_page("rewards", run="learning")  # a new session: the saved replay is listed and shows again
    at.selectbox(key="saved_replay:learning").set_value("lenient").run()
    assert {m.label: m.value for m in at.metric}["Samples whose reward changed"] == f"{expected.changed:,}"
    at.multiselect(key="replay_rewards").set_value([])
    at.text_input(key="replay_weights").set_value("1, 2")
    at.button(key="FormSubmitter:replay-Replay").click().run()  # nothing chosen: said first, nothing run
    assert [shown(e.value) for e in at.error] == ["choose at least one reward to replay with"]
    at.multiselect(key="replay_rewards").set_value(["format"])
    for typed in ("abc", "1e999"):  # words, and a number too large to be one (inf)
        at.text_input(key="replay_weights").set_value(typed)
        at.button(key="FormSubmitter:replay-Replay").click().run()
        said = f"weight '{typed}' is not a finite number: give numbers separated by commas, e.g. 1.0, 0.5"
        assert [shown(e.value) for e in at.error] == [said] and not at.exception
    at.text_input(key="replay_weights").set_value("1,5")  # a decimal comma: two weights for one reward
    at.button(key="FormSubmitter:replay-Replay").click().run()
    said = (
        "2 weights for 1 reward: weights are separated by commas, so a decimal is written with a point (1.5, not 1,5)"
    )
    assert [shown(e.value) for e in at.error] == [said] and not at.exception
    at.text_input(key="replay_weights").set_value("")
    at.button(key="FormSubmitter:replay-Replay").click().run()  # a fresh replay: no saved one is picked below it
    assert not at.exception and not at.error and at.selectbox(key="saved_replay:learning").value == ""
    at.selectbox(key="saved_replay:learning").set_value("lenient").run()  # picked again, it shows again
    assert {m.label: m.value for m in at.metric}["Samples whose reward changed"] == f"{expected.changed:,}"

    write_trl_folder(runs / "trl", 5)  # a plain TRL folder: it has no answers to grade, and is only read
    at = open_page("rewards", run="trl")
    assert at.multiselect(key="replay_rewards").value == ["format"]
    assert "replay_name" not in [t.key for t in at.text_input]  # nothing to save into TRL's folder
    at.button(key="FormSubmitter:replay-Replay").click().run()
    assert not at.exception and not at.error and not (runs / "trl" / "replays").exists()
    (caption,) = [c.value for c in at.caption if c.value.startswith("Scores every logged completion")]
    assert "--save" not in caption and not [s for s in at.selectbox if s.key.startswith("saved_replay")]
