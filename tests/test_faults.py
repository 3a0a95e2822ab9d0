"""Faults against the run directory, on real files and real processes: the right process or none,
one writer per run folder, damaged metadata files, and a trainer that outlives damage to its own
monitoring files."""

import json
import os
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import effective_state, list_runs, process_started, read_status, run_info, stop
from core.store import RunStore
from tests.conftest import ROOT, TINY_SETS
from tests.dashboard_fixtures import make_runs, write_status

PAGES = ["runs", "rollouts", "rewards", "prompts", "eval", "compare"]


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
    assert effective_state(read_status(tmp_path)) in ("crashed", "running") and run_info(tmp_path)["state"] in (
        "crashed", "unreadable")  # a pid that is not a number makes status.json unreadable


def test_a_reused_pid_is_another_process_the_run_crashed(tmp_path, no_signals):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the run's trainer was pid N; it died, and N now belongs to an unrelated process
        write_status(tmp_path, state="running", pid=sleeper.pid, pid_started=process_started(sleeper.pid) - 3600,
                     ended_at=None)
        assert run_info(tmp_path)["state"] == "crashed"
        assert not stop(tmp_path) and no_signals == []
        write_status(tmp_path, state="running", pid=sleeper.pid, ended_at=None)  # written before pid_started
        assert run_info(tmp_path)["state"] == "crashed" and not stop(tmp_path)
        write_status(tmp_path, state="running", pid=sleeper.pid, pid_started=process_started(sleeper.pid),
                     ended_at=None)  # proven: the same process that status.json names
        assert run_info(tmp_path)["state"] == "running" and stop(tmp_path)
        assert no_signals == [(sleeper.pid, 15)]
    finally:
        sleeper.kill()
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
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_metadata_file_makes_one_run_unreadable_and_breaks_no_page(tmp_path, monkeypatch, case):
    runs = make_runs(tmp_path)
    name, text, whole_run = DAMAGED[case]
    (runs["learning"] / name).write_text(text)
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    info = {r["name"]: r for r in list_runs(tmp_path)}
    assert name.split("/")[-1] in info["learning"]["problem"]
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
        if page != "compare":
            assert any(name.split("/")[-1] in w.value for w in at.warning), page


# ---- one writer per run folder; the trainer owns its monitoring files -------------------------

def start(run_dir, *sets):
    args = [a for s in [*TINY_SETS, *sets, f"train.output_dir={run_dir}"] for a in ("--set", s)]
    return subprocess.Popen([sys.executable, "-m", "core.train", "--config", "configs/tiny_cpu.yaml", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, run_dir, step):
    deadline = time.time() + 300
    while (read_status(run_dir).get("global_step") or 0) < step:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)


def test_a_second_trainer_on_a_live_run_folder_exits_2_and_touches_nothing(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "busy"
    first = start(run_dir, "train.num_train_steps=300")
    try:
        wait_for_step(first, run_dir, 1)
        files = {p: p.read_bytes() for p in (run_dir / "run.yaml", run_dir / "eval" / "before.jsonl")}
        for args in (["--config", "configs/tiny_cpu.yaml", "--set", f"train.output_dir={run_dir}",
                      "--set", "train.seed=7"], ["--resume", str(run_dir)]):
            second = subprocess.run([sys.executable, "-m", "core.train", *args], cwd=ROOT, capture_output=True,
                                    text=True, timeout=300)
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-3000:]
            assert second.stderr.startswith(f"error: run folder '{run_dir}' is in use by a live run "
                                            f"(pid {first.pid})"), second.stderr
        assert {p: p.read_bytes() for p in files} == files  # nothing rewritten
        assert read_status(run_dir)["pid"] == first.pid and first.poll() is None
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert read_status(run_dir)["state"] == "stopped"
    seeds = {json.loads(line)["prompt_id"] for line in (run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines()}
    assert seeds  # one run's rollouts only (a second seed would have sampled other prompts into the file)


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
