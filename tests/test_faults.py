"""Faults against the run directory, on real files and real processes: the right process or none,
one writer per run folder, damaged metadata files, and a trainer that outlives damage to its own
monitoring files."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from core.rundir import read_status
from core.runs import list_runs, run_info, stop
from core.runstate import effective_state, process_started, process_ticks
from core.store import RunStore
from tests.conftest import ROOT, TINY_SETS, lines
from tests.dashboard_fixtures import make_runs, write_status

# The tests that start processes, train or drive the dashboard are marked slow (the full tier only): by
# their fixtures (tests/conftest.py) or by hand.

PAGES = ["runs", "rollouts", "rewards", "prompts", "eval", "compare"]


REAL_KILL = os.kill  # the test's own signals (ending its helper processes) are real


@pytest.fixture
def no_signals(monkeypatch):
    """Record every os.kill the code under test makes, and make none."""
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


# ---- the right process, or none -------------------------------------------------------------


@pytest.mark.parametrize("pid", [0, 1, -1, -4242, "123", True, None, 2**70])
def test_a_pid_that_is_not_a_process_of_ours_is_never_signalled(tmp_path, no_signals, pid):
    write_status(tmp_path, state="running", pid=pid, pid_started=time.time(), ended_at=None)
    assert not stop(tmp_path) and no_signals == []
    assert effective_state(read_status(tmp_path)) == "crashed"  # no process of its own: never "running"
    # a pid that is not a whole number (text, a boolean) makes status.json unreadable to the Runs page
    assert run_info(tmp_path)["state"] == ("unreadable" if isinstance(pid, (str, bool)) else "crashed")


@pytest.mark.slow
def test_a_reused_pid_is_another_process_the_run_crashed(tmp_path, no_signals):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the run's trainer was pid N; it died, and N now belongs to an unrelated process
        write_status(
            tmp_path, state="running", pid=sleeper.pid, pid_started=process_started(sleeper.pid) - 3600, ended_at=None
        )
        assert run_info(tmp_path)["state"] == "crashed"
        assert not stop(tmp_path) and no_signals == []
        write_status(tmp_path, state="running", pid=sleeper.pid, ended_at=None)  # written before pid_started
        assert run_info(tmp_path)["state"] == "crashed" and not stop(tmp_path)
        write_status(
            tmp_path, state="running", pid=sleeper.pid, pid_started=process_started(sleeper.pid), ended_at=None
        )  # proven: the same process that status.json names
        assert run_info(tmp_path)["state"] == "running" and stop(tmp_path)
        assert no_signals == [(sleeper.pid, 15)]
        # the system clock stepped by an hour since the trainer wrote its start (a virtual machine catching up):
        # its start in ticks since boot still proves it the run's own, where a time of day no longer can
        ticks = process_ticks(sleeper.pid)
        write_status(
            tmp_path,
            state="running",
            pid=sleeper.pid,
            pid_started=process_started(sleeper.pid) + 3600,
            pid_ticks=ticks,
            ended_at=None,
        )
        assert run_info(tmp_path)["state"] == "running" and stop(tmp_path)
        write_status(
            tmp_path,
            state="running",
            pid=sleeper.pid,
            pid_started=process_started(sleeper.pid),
            pid_ticks=ticks - 500,
            ended_at=None,
        )  # the ticks say another process: the time of day can't save it
        assert run_info(tmp_path)["state"] == "crashed" and not stop(tmp_path)
        assert no_signals == [(sleeper.pid, 15)] * 2
    finally:
        # Popen.kill would go through the recording os.kill: no kill, and a 60 s wait
        REAL_KILL(sleeper.pid, signal.SIGKILL)
        sleeper.wait()


# ---- damaged metadata files: the run is unreadable, every page keeps working ------------------

DAMAGED = {  # file: text, and whether the run as a whole becomes unreadable
    "status_list": ("status.json", "[]", True),
    "status_null": ("status.json", "null", True),
    "status_text": ("status.json", '"x"', True),
    "status_torn": ("status.json", '{"state": "runn', True),
    "status_pid_text": ("status.json", '{"state": "running", "pid": "12", "started_at": 1}', True),
    "status_started_text": ("status.json", '{"state": "finished", "started_at": "yesterday"}', True),
    "status_state": ("status.json", '{"state": "exploded"}', True),
    "run_yaml_list": ("run.yaml", "- 1\n- 2\n", True),
    "run_yaml_bad": ("run.yaml", "train: [1, 2\n", True),
    "summary_null_phase": ("eval/summary.json", '{"before": null}', False),
    "summary_list": ("eval/summary.json", "[1]", False),
    "summary_text_accuracy": ("eval/summary.json", '{"after": {"eval_accuracy": "high"}}', False),
    "eval_record_without_text": ("eval/after.jsonl", '{"prompt_id": "e0", "correct": false}\n', False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_metadata_file_makes_one_run_unreadable_and_breaks_no_page(tmp_path, monkeypatch, case):
    from tests.test_dashboard import shown

    runs = make_runs(tmp_path)
    name, text, whole_run = DAMAGED[case]
    (runs["learning"] / name).write_text(text)
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    info = {r["name"]: r for r in list_runs(tmp_path)}
    checked = name != "eval/after.jsonl"  # a record file is read line by line, by the store: no run-level problem
    assert not checked or name.split("/")[-1] in info["learning"]["problem"]
    assert (info["learning"]["state"] == "unreadable") == whole_run
    assert info["html"]["problem"] is None and info["html"]["state"] == "finished"  # the others are untouched
    store = RunStore(runs["learning"])
    store.refresh()
    assert store.count() == 1024  # its rollouts are still there to read
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
        at.query_params["run"] = "learning"
        at.switch_page(f"app_pages/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page != "compare" and checked:
            assert any(name.split("/")[-1] in shown(w.value) for w in at.warning), page  # as a person reads it


# ---- one writer per run folder; the trainer owns its monitoring files -------------------------


def start(run_dir, *sets):
    args = [a for s in [*TINY_SETS, *sets, f"train.output_dir={run_dir}"] for a in ("--set", s)]
    return subprocess.Popen(
        [sys.executable, "-m", "core.train", "--config", "configs/tiny_cpu.yaml", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(proc, run_dir, step):
    deadline = time.time() + 300
    while (read_status(run_dir).get("global_step") or 0) < step:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)


def test_a_second_trainer_on_a_live_run_folder_exits_2_and_touches_nothing(tiny_model_dir, tmp_path, train_here):
    run_dir = tmp_path / "busy"
    first = start(run_dir, "train.num_train_steps=300")
    try:
        wait_for_step(first, run_dir, 1)
        first.send_signal(signal.SIGSTOP)  # alive but paused: its steps would only take the CPU from the others
        while psutil.Process(first.pid).status() != psutil.STATUS_STOPPED:
            assert first.poll() is None, first.communicate()[1][-3000:]  # ended first: no loop for ever
            time.sleep(0.05)
        files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}  # paused: none of them changes
        for args in (  # the second trainer: python -m core.train in this process, through its main()
            ["--config", "configs/tiny_cpu.yaml", "--set", f"train.output_dir={run_dir}", "--set", "train.seed=7"],
            ["--resume", str(run_dir)],
        ):
            code, err = train_here(*args)
            assert code == 2 and err.count("\n") == 1, err[-3000:]
            assert err.startswith(f"error: run folder '{run_dir}' is in use by a live run (pid {first.pid})"), err
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files  # nothing written or added
        assert read_status(run_dir)["pid"] == first.pid and first.poll() is None
    finally:
        first.send_signal(signal.SIGCONT)
        first.terminate()
        first.communicate(timeout=120)
    assert read_status(run_dir)["state"] == "stopped"
    per_step = Counter(r["step"] for r in lines(run_dir / "rollouts" / "rollouts.jsonl"))
    assert len(per_step) >= 1 and len(set(per_step.values())) == 1  # one run's: a second's would repeat steps


def test_the_trainer_rewrites_a_status_file_damaged_under_it(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "damaged"
    proc = start(run_dir, "train.num_train_steps=12")
    wait_for_step(proc, run_dir, 2)
    (run_dir / "status.json").write_text("")  # emptied mid-run
    (run_dir / "eval" / "summary.json").write_text("garbage")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["global_step"] == 12 and status["pid"] == proc.pid
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert set(summary) == {"after"}  # the damaged file was replaced, not trusted


# ---- the right run: its real folder, whatever its name ---------------------------------------


@pytest.mark.slow
def test_a_run_folder_named_by_hand_is_the_run_every_page_and_action_uses(tmp_path, monkeypatch):
    runs = make_runs(tmp_path)
    (tmp_path / "exp 1").mkdir()  # made from the command line: a name the dashboard would not choose
    for path in (runs["html"] / "run.yaml", runs["html"] / "status.json", runs["html"] / "rollouts"):
        os.system(f"cp -r '{path}' '{tmp_path / 'exp 1'}/'")
    (runs["learning"]).rename(tmp_path / "exp_1")  # and a different run under the name sanitising gives
    (tmp_path / "elsewhere").symlink_to(tmp_path / "exp_1")  # a symlink: never listed
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    names = sorted(r["name"] for r in list_runs(tmp_path))
    assert names == ["crashed", "exp 1", "exp_1", "html"]
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = "exp 1"
    at.switch_page("app_pages/rollouts.py")
    at.run()
    assert not at.exception and "4 rollouts match" in "\n".join(c.value for c in at.caption)  # not exp_1's 1,024
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = "exp 1"
    at.switch_page("app_pages/runs.py")
    at.run()
    next(b for b in at.button if b.label == "Yes, delete it").click().run()  # the Delete popover's button
    assert not at.exception
    assert not (tmp_path / "exp 1").exists() and (tmp_path / "exp_1" / "rollouts").is_dir()
    with pytest.raises(ValueError, match="no run folder named 'elsewhere'"):
        from core.runs import delete

        delete(tmp_path / "elsewhere", tmp_path)
    assert (tmp_path / "exp_1" / "run.yaml").is_file()


# ---- bad input: one clear line, early --------------------------------------------------------

GOOD = '{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n'
DATA_FILES = {  # name: (file content, the start of the one-line error)
    "empty": ("", "holds no rows"),
    "blank_lines": ("\n\n", "holds no rows"),
    "not_json": (GOOD + "oops, not json\n" + GOOD, "line 2 is not a JSON object"),
    "a_list": (GOOD + "[1, 2]\n", "line 2 is not a JSON object"),
    "no_answer": (GOOD + '{"question": "q"}\n', "line 2 has no text 'question' and 'answer'"),
    "no_question": ('{"answer": "#### 3"}\n' + GOOD, "line 1 has no text 'question' and 'answer'"),
    "no_hashes": (GOOD + '{"question": "q", "answer": "it is 5"}\n' * 3, "has 3 of 4 answers without '#### <number>'"),
    "too_few": (GOOD * 3, "has 3 rows, fewer than dataset.n_train=4"),
    "none_to_evaluate": (GOOD * 4, "has 4 rows, all of them for training (dataset.n_train=4), and none left to"),
    "bad_utf8": (b"\xff\xfe" + GOOD.encode(), "line 1 is not a JSON object"),
}


@pytest.mark.parametrize("case", list(DATA_FILES))
def test_a_bad_data_file_is_one_line_before_any_model_loads(tmp_path, case):
    from core.config import ConfigError, load_config
    from core.data import load_rows

    text, expected = DATA_FILES[case]
    path = tmp_path / "data.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cfg = load_config(sets=[f"dataset.path={path}", "dataset.n_train=4", "dataset.n_eval=2"])
    with pytest.raises(ConfigError) as info:
        load_rows(cfg.dataset, 0)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    if case == "none_to_evaluate":  # a run that does not evaluate trains on all of them
        assert len(load_rows(cfg.dataset, 0, evaluates=False)[0]) == 4


def test_a_pipe_or_a_device_as_data_is_refused_at_once(tmp_path):
    from core.config import ConfigError, load_config

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(ConfigError, match="is not a regular file or folder"):
            load_config(sets=[f"dataset.path={path}"])
    with pytest.raises(ConfigError, match="but dataset.name is synthetic"):
        load_config(sets=["dataset.name=synthetic", f"dataset.path={tmp_path}"])


def test_the_cli_refuses_bad_data_before_loading_a_model(tmp_path, train_here):
    # a Hub model that is not cached would be the first thing to fail if the model loaded first
    path = tmp_path / "data.jsonl"
    path.write_text(GOOD + "oops\n")
    code, err = train_here(
        "--set",
        "model_name=nobody/not-cached",
        "--set",
        f"dataset.path={path}",
        "--set",
        f"train.output_dir={tmp_path / 'run'}",
    )
    assert (
        code == 2
        and err.strip().splitlines()[-1]
        == f"error: dataset file '{path}' line 2 is not a JSON object: each line must be "
        '{"question": ..., "answer": "... #### <number>"}'
    )


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["grpo.loss_type=bogus"], "'grpo.loss_type' has value 'bogus', expected one of grpo, dr_grpo, dapo"),
        (["grpo.scale_rewards=sometimes"], "expected one of group, batch, none"),
        (["grpo.lr_scheduler_type=nope"], "'grpo.lr_scheduler_type' has value 'nope', expected one of linear, cosine"),
        (["train.learning_rate=nan"], "'train.learning_rate' has value nan, expected a number greater than 0"),
        (["train.learning_rate=inf"], "'train.learning_rate' has value inf, expected a finite number"),
        (["grpo.beta=.inf"], "'grpo.beta' has value inf, expected a finite number"),
        (["grpo.num_iterations=0"], "'grpo.num_iterations' has value 0, expected 1 or more"),
        (["rewards=[{name: 'no_such_module_anywhere:f'}]"], "there is no module 'no_such_module_anywhere'"),
    ],
)
def test_bad_values_are_one_line(sets, expected):
    from core.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_config_file_that_is_not_utf8(tmp_path):
    from core.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(b"model_name: caf\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize("folder", ["w #1", "a: b", "x ' y", "  spaced", "100", "true"])
def test_paths_passed_with_set_arrive_exactly_as_given(tmp_path, folder):
    from core.config import load_config

    target = str(tmp_path / folder)
    assert load_config(sets=[f"train.output_dir={target}"]).train.output_dir == target
    assert load_config(sets=[f"model_name={folder}"]).model_name == folder


@pytest.mark.slow
def test_the_launch_form_cannot_publish_or_write_outside_the_run_folder(tmp_path, monkeypatch):
    import yaml

    from core.config import load_config, web_form_problem
    from tests.test_dashboard import shown

    assert web_form_problem(load_config()) is None
    for key in ("push_to_hub", "trust_remote_code"):  # publish; run a Hub repository's own code
        assert f"grpo.{key} cannot be set from the dashboard" in web_form_problem(
            load_config(sets=[f"grpo.{key}=true"])
        )
    runs = make_runs(tmp_path)
    config = yaml.safe_load((runs["html"] / "run.yaml").read_text())
    config["grpo"]["hub_model_id"] = "someone/leak"  # a run made from a terminal may carry it
    (runs["html"] / "run.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["from_run"] = "html"
    at.switch_page("app_pages/launch.py")
    at.run()
    labels = {w.label for kind in ("text_input", "toggle") for w in getattr(at, kind)}
    assert not {"push_to_hub", "hub_model_id", "logging_dir", "deepspeed", "trust_remote_code"} & labels  # not offered
    next(b for b in at.button if b.label == "Launch").click().run()
    assert any("grpo.hub_model_id cannot be set from the dashboard" in shown(e.value) for e in at.error)
    assert sorted(r["name"] for r in list_runs(tmp_path)) == ["crashed", "html", "learning"]  # nothing launched


# ---- stop means stop, at any phase ------------------------------------------------------------

PHASE_SETS = {  # phase: settings that make it last long enough to be caught in it
    "loading data": ["dataset.level=3", "dataset.n_train=400000", "dataset.n_eval=8"],
    "loading model": [],  # with an empty model cache: builtin:tiny is built (minutes)
    "eval before": ["dataset.n_eval=256", "eval.batch_size=1"],
    "training": ["train.num_train_steps=500"],
    "eval after": ["train.num_train_steps=1", "dataset.n_eval=64", "eval.batch_size=1"],
}


@pytest.mark.parametrize("phase", list(PHASE_SETS))
def test_sigterm_stops_the_run_in_every_phase(tiny_model_dir, tmp_path, phase):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SIMPLE_GRPO_CACHE": str(tmp_path / "cache")} if phase == "loading model" else None
    args = [a for s in [*TINY_SETS, *PHASE_SETS[phase], f"train.output_dir={run_dir}"] for a in ("--set", s)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.train", "--config", "configs/tiny_cpu.yaml", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 300
    while read_status(run_dir).get("phase") != phase:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    if phase == "training":
        wait_for_step(proc, run_dir, 1)
    sent = time.time()
    proc.send_signal(15)
    time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(15)  # a second SIGTERM corrupts nothing
    output, _ = proc.communicate(timeout=120)
    took = time.time() - sent
    print(f"{phase}: stopped {took:.1f} s after SIGTERM")
    assert proc.returncode == 0, output[-3000:]
    assert took < 15, output[-3000:]  # about 5 s on an idle 2-core machine, however long the phase
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["phase"] in (phase, "saving"), status
    assert f"stopped during {phase}:" in output  # where the stop was asked for, not the save it ended in
    assert "Traceback" not in output
    if phase == "training":  # a step boundary: a checkpoint to resume from
        assert f"continues from checkpoint-{status['global_step']}" in output
        assert (run_dir / f"checkpoint-{status['global_step']}").is_dir()
    elif phase == "eval after":
        assert (run_dir / "model" / "model.safetensors").is_file() and not (run_dir / "eval" / "after.jsonl").exists()
        assert "training is done and model/ holds the result" in output
    else:
        assert "nothing to resume: launch it again" in output and not list(run_dir.glob("checkpoint-*"))


# ---- nothing lost, nothing doubled --------------------------------------------------------------


def test_kill_9_then_resume_shows_one_attempt_of_each_step(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "killed"
    proc = start(run_dir, "train.num_train_steps=8", "train.save_steps=2")
    wait_for_step(proc, run_dir, 5)
    proc.kill()  # kill -9: no handler runs, the status still says running
    proc.communicate()
    assert run_info(run_dir)["state"] == "crashed"
    result = subprocess.run(
        [sys.executable, "-m", "core.train", "--resume", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["global_step"] == 8 and status["attempt"] == 2
    records = [json.loads(x) for x in (run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
    first_again = min(r["step"] for r in records if r["attempt"] == 2)
    assert any(r["attempt"] == 1 and r["step"] >= first_again for r in records)  # the files keep both ...
    store = RunStore(run_dir)
    store.refresh()
    keys = store._query("SELECT step, rank, sample, prompt_id, count(*) AS n FROM rollouts GROUP BY ALL")
    assert (keys["n"] == 1).all() and sorted(set(keys["step"])) == list(range(1, 9))  # ... the store shows one
    assert store.count() == 8 * 16
    steps = store.metric_series(["loss"])["step"].tolist()
    assert steps == list(range(1, 9))


# ---- readers never die on one bad line, and never change a value -------------------------------

LINES = {  # a line among good ones, with these values: (is it kept?, the value it is kept with)
    "rewards_a_list": ({"rewards": [1, 2]}, False, None),
    "step_past_int64": ({"step": 2**64}, False, None),
    "correct_nonsense": ({"correct": "maybe"}, False, None),
    # a number or a boolean written as text is text, not what it says: skipped like any other wrong type
    "correct_as_text": ({"correct": "false"}, False, None),
    "step_as_text": ({"step": "3"}, False, None),
    "reward_as_text": ({"reward": "1.0"}, False, None),
    "a_reward_null": ({"rewards": {"x": None}}, True, {"x": None}),
    # DuckDB's own reader would cast these and keep the line: each is skipped, never changed
    "sample_a_fraction": ({"sample": 1.5}, False, None),
    "step_a_boolean": ({"step": True}, False, None),
    "correct_a_number": ({"correct": 1}, False, None),
    "completion_an_object": ({"completion": {"a": 1}}, False, None),
    "completion_a_list": ({"completion": [1, 2]}, False, None),
    "completion_a_number": ({"completion": 5}, False, None),
    "prompt_id_a_number": ({"prompt_id": 7}, False, None),
    "prompt_id_null": ({"prompt_id": None}, False, None),  # no key: not a rollout
    "step_null": ({"step": None}, False, None),  # no step: no place in the run (replay read no step at all)
    "a_reward_as_text": ({"rewards": {"x": "0.5"}}, False, None),
    "a_reward_a_boolean": ({"rewards": {"x": True}}, False, None),
    "step_a_whole_float": ({"step": 3.0}, False, None),
    "completion_a_huge_number": ({"completion": 10**100}, False, None),  # DuckDB keeps its digits as they are
    "reward_an_exponent": ({"reward": -1e300}, True, -1e300),
    "step_at_int64_max_plus_one": ({"step": 2**63}, False, None),
    "a_reward_infinite": ({"rewards": {"x": float("inf")}}, True, {"x": float("inf")}),  # json.dumps: Infinity
    # text that merely looks like other JSON is text: kept as written
    "completion_looks_like_a_list": ({"completion": "[1, 2]"}, True, "[1, 2]"),
    "completion_looks_like_a_number": ({"completion": "42"}, True, "42"),
}


@pytest.mark.parametrize("slow", [False, True], ids=["duckdb", "line_by_line"])
@pytest.mark.parametrize("case", list(LINES))
def test_a_bad_rollout_line_is_skipped_and_counted_and_good_ones_keep_their_values(tmp_path, case, slow):
    from core.rundir import rollout_record

    values, kept, value = LINES[case]
    good = rollout_record(
        step=0,
        prompt_id="p",
        prompt="P",
        question="Q",
        completion="Final: 1",
        prediction="1",
        ground_truth="1",
        reward=1.0,
        correct=True,
        rank=0,
        sample=0,
        completion_tokens=3,
        time=1.0,
    )
    odd = json.dumps({**good, "sample": 1, **values})
    lines = [json.dumps(good), odd, *(["not json"] if slow else []), json.dumps({**good, "sample": 2})]
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "rollouts.jsonl").write_text("\r\n".join(lines) + "\r\n")  # \r\n endings are fine
    store = RunStore(tmp_path)
    store.refresh()
    assert store.count() == 2 + kept and store.skipped == (not kept) + slow
    assert store._query("SELECT sample FROM rollouts ORDER BY sample")["sample"].tolist() == (
        [0, 1, 2] if kept else [0, 2]
    )
    if kept:
        (column,) = values
        assert store.rollout("p", 0, 1)[column] == value


@pytest.mark.parametrize("slow", [False, True], ids=["duckdb", "line_by_line"])
@pytest.mark.parametrize("field", ["reward", "rewards"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NAN", "-nan", "1E400", "Infinity", "-Infinity", "NaN"])
def test_a_number_only_duckdb_reads_is_skipped_on_both_paths(tmp_path, value, field, slow):
    """DuckDB's reader takes `inf` and `nan` as numbers; Python's json (the exact path), only NaN and
    ±Infinity (as json.dumps writes them) and 1E400 (inf). Each path keeps the line only when the other would."""
    good = (
        '{"step": 0, "prompt_id": "p", "sample": %s, "reward": %s}'
        if field == "reward"
        else '{"step": 0, "prompt_id": "p", "sample": %s, "rewards": {"x": %s}}'
    )
    lines = [good % (0, 1.0), good % (1, value), *(["not json"] if slow else []), good % (2, 0.0)]
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "rollouts.jsonl").write_text("\n".join(lines) + "\n")
    kept = value in ("1E400", "Infinity", "-Infinity", "NaN")
    store = RunStore(tmp_path)
    store.refresh()
    assert store.count() == 2 + kept and store.skipped == (not kept) + slow
    if kept:
        got = store.rollout("p", 0, 1)[field]
        assert str(got if field == "reward" else got["x"]).lower() in ("inf", "-inf", "nan")


def test_bad_metrics_and_eval_lines_do_not_hide_good_ones(tmp_path):
    runs = make_runs(tmp_path)
    run = runs["learning"]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": "x", "loss": 9}\n{"step": 31, "time": 1.0, "loss": 0.5}\n')
    (run / "eval" / "after.jsonl").write_text((run / "eval" / "after.jsonl").read_text()[:-30])  # torn
    store = RunStore(run)
    store.refresh()
    assert store.metric_series(["loss"])["step"].tolist() == list(range(1, 32))  # the valid line after the bad one
    summary = store.eval_summary().set_index("phase")
    assert summary.loc["before", "n"] == 4 and summary.loc["after", "n"] == 3  # the torn line waits; the rest shows
    assert store.skipped == 1


@pytest.mark.parametrize("phase", ["loading model", "eval before"])
def test_the_dashboards_stop_ends_a_two_process_run_in_each_phase_before_training(tiny_model_dir, tmp_path, phase):
    # While they load, the workers are apart (rank 0's SIGTERM reaches the others through their
    # launcher); during the eval before training rank 0 evaluates alone while the other rank waits.
    # Either way a stop ends both at once, before any training. Loading the data, like loading the model,
    # comes before the workers meet; one process stopped in each phase: test_sigterm_stops_the_run_in_every_phase.
    run_dir = tmp_path / "two"
    env = {**os.environ, "SIMPLE_GRPO_CACHE": str(tmp_path / "cache")} if phase == "loading model" else None
    sets = {"eval before": ["dataset.n_eval=256", "eval.batch_size=1"]}.get(phase, PHASE_SETS[phase])
    args = [
        a for s in [*TINY_SETS, "launch.num_processes=2", *sets, f"train.output_dir={run_dir}"] for a in ("--set", s)
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.train", "--config", "configs/tiny_cpu.yaml", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 300
    while read_status(run_dir).get("phase") != phase:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    sent = time.time()
    if not stop(run_dir):  # as the Runs page's Stop: SIGTERM to rank 0, proven to be the run's
        status = read_status(run_dir)  # why not, for the report: its state, or its pid's start time
        found = process_started(status["pid"]) if isinstance(status.get("pid"), int) else None
        launcher = psutil.Process(proc.pid)
        for process in [*launcher.children(recursive=True), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        pytest.fail(
            f"stop() found no live run: status {status}, that pid started at {found}\n"
            f"{proc.communicate(timeout=60)[0][-3000:]}"
        )
    output, _ = proc.communicate(timeout=120)
    took = time.time() - sent
    print(f"two processes, {phase}: stopped {took:.1f} s after SIGTERM")
    assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert took < 15, output[-3000:]  # a few seconds on an idle 2-core machine, however long the phase
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["global_step"] == 0 and status["phase"] == phase, output[-3000:]
    assert "nothing to resume: launch it again" in output
    assert not (run_dir / "rollouts" / "rollouts.rank1.jsonl").exists()  # no rank trained


@pytest.mark.slow
def test_a_stop_leaves_no_child_process_of_the_run_behind(tmp_path, monkeypatch):
    """A stop can land while the run starts a child process (the tiny model's builder, as loading
    begins), after the child exists and before subprocess.run holds it to kill it: the stopped run
    ends its children itself (a builder left behind would build on for minutes, and CI once waited
    on its output)."""
    import signal

    from core.config import load_config
    from core.lifecycle import GracefulStop, StopRequested, run_in_folder

    monkeypatch.setenv("SIMPLE_GRPO_LOGGED", "1")  # the test's own output stays pytest's
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", [f"train.output_dir={tmp_path / 'run'}"])
    children = []

    def pipeline(cfg, run, resume):  # the child started, the stop landing before anyone holds it
        children.append(psutil.Process(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]).pid))
        raise StopRequested

    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    try:
        assert run_in_folder(pipeline, cfg, GracefulStop()) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
        sys.unraisablehook = hook
    assert read_status(tmp_path / "run")["state"] == "stopped"
    (child,) = children
    assert child.wait(timeout=10) == -signal.SIGKILL  # ended by the run, not left to sleep on


def test_stop_right_after_launch_is_a_stop_not_a_crash(tiny_model_dir, tmp_path):
    from core.config import load_config
    from core.runs import launch

    config = load_config(ROOT / "configs" / "tiny_cpu.yaml", sets=TINY_SETS).to_dict()
    for name, delay in (("at_once", 0.0), ("while_starting", 0.5)):
        run_dir = launch(config, tmp_path, name, repo=ROOT)
        time.sleep(delay)
        assert stop(run_dir)  # the Runs page's Stop, before the trainer has written anything
        deadline = time.time() + 120
        while run_info(run_dir)["state"] in ("starting", "running"):
            assert time.time() < deadline
            time.sleep(0.1)
        assert run_info(run_dir)["state"] == "stopped", (run_dir / "train.log").read_text()[-2000:]
