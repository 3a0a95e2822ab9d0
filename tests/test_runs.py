"""Run directories as the dashboard drives them: names, launching a real subprocess (in a process group
of its own), stopping and resuming it, crash detection, deleting."""

import subprocess
import sys
import time

import psutil
import pytest

from core.config import load_config
from core.rundir import checkpoints, read_status
from core.runs import delete, launch, list_runs, resume, run_path, safe_run_name, stop
from core.runstate import effective_state, process_identity
from tests.conftest import ROOT, TINY_SETS, lines

# The tests that start processes, train or drive the dashboard are marked slow (the full tier only): by
# their fixtures (tests/conftest.py) or by hand.


@pytest.mark.parametrize(
    "name, expected",
    [
        ("my run", "my_run"),
        ("../../etc/passwd", "etc_passwd"),  # no way out of the runs folder
        ("/abs/path", "abs_path"),
        ("ok-name_1.2", "ok-name_1.2"),
        ("<script>", "script"),
    ],
)
def test_run_names_stay_inside_the_runs_folder(tmp_path, name, expected):
    assert safe_run_name(name) == expected
    assert run_path(tmp_path, name) == (tmp_path / expected).resolve()


def test_unusable_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no usable characters"):
        run_path(tmp_path, "../..")


def test_a_live_state_without_its_process_is_crashed():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    status = {"state": "running", **process_identity(child.pid)}
    try:
        assert effective_state(status) == "running"  # its own process, alive
    finally:
        child.kill()
        child.wait()
    assert effective_state(status) == "crashed"  # the same status, its process gone
    assert effective_state({"state": "running", "pid": 2**22 + 4321}) == "crashed"
    assert effective_state({**status, "state": "finished"}) == "finished"


def test_launch_refuses_what_a_web_form_may_not_start_and_leaves_no_folder(tmp_path):
    config = load_config(ROOT / "configs" / "tiny_cpu.yaml", sets=["grpo.push_to_hub=true"], check=False).to_dict()
    with pytest.raises(ValueError, match="grpo.push_to_hub cannot be set from the dashboard"):
        launch(config, tmp_path, "pushing", repo=ROOT)
    assert list(tmp_path.iterdir()) == []


def test_launch_stop_resume_and_delete_as_the_runs_page_does(tiny_model_dir, tmp_path):
    # as the Runs page: Launch (the trainer in a process group of its own), Stop (SIGTERM to the trainer:
    # it stops gracefully at a step), Resume (python -m core.train --resume, a new target), Delete. The run
    # keeps only weights in its saves (as the demo preset), yet the stop saves all that the resume needs.
    sets = ["train.num_train_steps=500", "train.save_steps=1", "grpo.save_only_model=true"]
    config = load_config(ROOT / "configs" / "tiny_cpu.yaml", sets=TINY_SETS + sets, env={}).to_dict()
    run_dir = launch(config, tmp_path, "stop me", repo=ROOT)
    assert run_dir == tmp_path.resolve() / "stop_me"
    with pytest.raises(ValueError, match="already exists"):
        launch(config, tmp_path, "stop me", repo=ROOT)
    deadline = time.time() + 300
    while read_status(run_dir).get("global_step", 0) < 2:
        assert time.time() < deadline and effective_state(read_status(run_dir)) in ("starting", "running"), (
            run_dir / "train.log"
        ).read_text()[-3000:]
        time.sleep(0.2)
    with pytest.raises(ValueError, match="still running"):
        delete(run_dir, tmp_path)
    assert stop(run_dir)
    while effective_state(read_status(run_dir)) in ("starting", "running"):
        assert time.time() < deadline
        time.sleep(0.2)
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["exit_code"] == 0 and 2 <= status["global_step"] < 500
    assert "SIGTERM received" in (run_dir / "train.log").read_text()
    assert [r["state"] for r in list_runs(tmp_path)] == ["stopped"]
    assert not stop(run_dir)  # nothing left to stop
    stopped_at = status["global_step"]
    assert (run_dir / "model" / "model.safetensors").is_file()
    *kept, last = checkpoints(run_dir)
    assert kept and all((c / "model.safetensors").is_file() and not (c / "optimizer.pt").exists() for c in kept)
    assert last.name == f"checkpoint-{stopped_at}" and (last / "optimizer.pt").is_file()
    assert (last / "scheduler.pt").is_file()
    assert not (run_dir / "eval" / "after.jsonl").exists()  # a stopped run skips the final eval
    before = (run_dir / "eval" / "before.jsonl").read_text()

    resume(run_dir, ROOT, num_train_steps=stopped_at + 2)  # as the Runs page's Resume does
    resumed = read_status(run_dir)  # at once: the new target, and nothing of the last start's phase
    assert (resumed["state"], resumed["max_steps"]) == ("starting", stopped_at + 2)
    assert resumed.get("phase") in (None, "loading data", "loading model") and resumed.get("exit_code") is None
    while effective_state(read_status(run_dir)) != "finished":
        assert time.time() < deadline and effective_state(read_status(run_dir)) != "failed", (
            run_dir / "train.log"
        ).read_text()[-3000:]
        time.sleep(0.2)
    assert read_status(run_dir)["global_step"] == stopped_at + 2
    # the same run directory continued: steps keep counting, files keep appending
    rollouts = lines(run_dir / "rollouts" / "rollouts.jsonl")
    assert sorted({r["step"] for r in rollouts}) == list(range(1, stopped_at + 3))  # one continuous run
    keys = [(r["step"], r["prompt_id"], r["sample"]) for r in rollouts]
    assert len(keys) == len(set(keys))
    assert [m["step"] for m in lines(run_dir / "metrics.jsonl") if "reward" in m] == list(range(1, stopped_at + 3))
    assert (run_dir / "eval" / "before.jsonl").read_text() == before  # the original baseline is kept
    assert (run_dir / "eval" / "after.jsonl").exists()
    pid = read_status(run_dir)["pid"]
    while psutil.pid_exists(pid):  # the ended trainer is reaped: no zombie left in the process that started it
        assert time.time() < deadline, psutil.Process(pid).status()
        time.sleep(0.2)
    delete(run_dir, tmp_path)
    assert not run_dir.exists()


def test_stop_reaches_every_rank_of_a_two_process_run(tiny_model_dir, tmp_path):
    # given an accelerate config, the run becomes accelerate launch (torchrun without one: a run to its
    # end in tests/test_train.py); the Runs page's Stop ends both ranks at one step
    launcher = ["launch.accelerate_config=configs/accelerate/ddp.yaml"]
    config = load_config(
        ROOT / "configs" / "tiny_cpu.yaml",
        env={},
        sets=TINY_SETS + launcher + ["train.num_train_steps=500", "launch.num_processes=2"],
    ).to_dict()
    run_dir = launch(config, tmp_path, "two", repo=ROOT)
    deadline = time.time() + 300
    while read_status(run_dir).get("global_step", 0) < 2:
        assert time.time() < deadline and effective_state(read_status(run_dir)) in ("starting", "running"), (
            run_dir / "train.log"
        ).read_text()[-3000:]
        time.sleep(0.2)
    assert stop(run_dir)  # SIGTERM to rank 0; the ranks agree at the next step boundary
    while effective_state(read_status(run_dir)) in ("starting", "running"):
        assert time.time() < deadline, (run_dir / "train.log").read_text()[-3000:]
        time.sleep(0.2)
    assert read_status(run_dir)["state"] == "stopped"
    counts = [
        len((run_dir / "rollouts" / name).read_text().splitlines())
        for name in ("rollouts.jsonl", "rollouts.rank1.jsonl")
    ]
    assert counts[0] == counts[1] > 0  # both ranks stopped at the same step
    assert (run_dir / "model" / "model.safetensors").is_file()
    log = (run_dir / "train.log").read_text()
    command = "-m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml --num_processes 2"
    assert f"starting the workers: {command}" in log
    assert "training with 2 process(es), MULTI_CPU" in log
    assert "stopped during training:" in log  # where the stop came, though the run ended in its save


def test_settings_diff_shows_the_value_in_effect(tmp_path):
    import yaml

    from core.runs import settings_diff
    from tests.dashboard_fixtures import write_config

    for name, grpo in (("a", {"beta": 0.04}), ("b", {})):
        (tmp_path / name).mkdir()
        write_config(tmp_path / name)
        config = yaml.safe_load((tmp_path / name / "run.yaml").read_text())
        config["grpo"] = grpo
        (tmp_path / name / "run.yaml").write_text(yaml.safe_dump(config))
    rows = settings_diff({"a": tmp_path / "a", "b": tmp_path / "b"})
    assert rows == [{"key": "grpo.beta", "a": "0.04", "b": "0.0"}]  # b left it at GRPOConfig's default, 0.0
