"""Several machines, tested without a cluster: two "machines" on this host (two launchers, machine
ranks 0 and 1, the loopback address, gloo) train one run together and stop together; the command
lines built for a 4-machine config are the ones torchrun's and accelerate's own parsers accept."""

import os
import socket
import subprocess
import sys
import time

import pytest

from core.config import ConfigError, load_config
from core.lifecycle import launcher, machine_commands
from core.model import check_vllm_server
from core.rundir import read_status
from core.runs import stop
from tests.conftest import ROOT, TINY_SETS, lines

# The tests that start processes, train or drive the dashboard are marked slow (the full tier only): by
# their fixtures (tests/conftest.py) or by hand.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_machines(run_dir, *sets):
    """Machine 0 and machine 1 of one run, each a `python -m core.train` with one worker."""
    port = free_port()
    common = [
        *TINY_SETS,
        "launch.num_machines=2",
        "launch.main_process_ip=127.0.0.1",
        f"launch.main_process_port={port}",
        f"train.output_dir={run_dir}",
        *sets,
    ]
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.train",
                "--config",
                "configs/tiny_cpu.yaml",
                *[a for s in [*common, f"launch.machine_rank={rank}"] for a in ("--set", s)],
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]


def finish(machines, timeout=600):
    """Both machines' output once both have exited; should one fail, the other is ended too (it would
    wait for its partner at the rendezvous for as long as the timeout)."""
    deadline = time.time() + timeout
    while any(m.poll() is None for m in machines) and time.time() < deadline:
        if any(m.poll() not in (None, 0) for m in machines):
            break
        time.sleep(0.2)
    for m in machines:
        if m.poll() is None:
            m.kill()
    return [m.communicate()[0] for m in machines]


def test_two_machines_train_one_run_together_and_the_dashboards_stop_on_machine_0_stops_both(tiny_model_dir, tmp_path):
    # the two machines meet and train one run: rank 0 writes it, machine 1's worker its own rollouts. The
    # Runs page's Stop (SIGTERM to rank 0 alone, on machine 0) ends both after the same step; machine 0
    # saves the model and says so, once. A run of several processes trained to its end (eval after, the
    # model, "run finished" said once): test_train's test_two_processes, on one machine.
    run_dir = tmp_path / "shared"
    machines = start_machines(run_dir, "train.num_train_steps=300")
    try:
        deadline = time.time() + 300
        while (read_status(run_dir).get("global_step") or 0) < 1:
            assert all(m.poll() is None for m in machines) and time.time() < deadline, finish(machines, 0)
            time.sleep(0.1)
        sent = time.time()
        assert stop(run_dir)
        outputs = finish(machines, timeout=120)
    finally:
        for m in machines:
            m.kill()
    print(f"two machines stopped {time.time() - sent:.1f} s after SIGTERM")
    assert [m.returncode for m in machines] == [0, 0], [o[-3000:] for o in outputs]
    assert "--nnodes=2 --nproc_per_node=1 --node_rank=1 --master_addr=127.0.0.1" in outputs[1]
    assert "training with 2 process(es)" in outputs[0]  # the world size: both machines' workers
    assert outputs[0].count("run stopped") == 1 and "run stopped" not in outputs[1]  # rank 0 writes the run
    status = read_status(run_dir)
    assert status["state"] == "stopped" and 1 <= status["global_step"] < 300
    assert (run_dir / "model" / "model.safetensors").is_file()
    rank0, rank1 = (lines(run_dir / "rollouts" / name) for name in ("rollouts.jsonl", "rollouts.rank1.jsonl"))
    assert len(rank0) == len(rank1) > 0 and {r["rank"] for r in rank1} == {1}  # the global rank
    assert {r["step"] for r in rank0} == {r["step"] for r in rank1}  # both machines stopped after the same step


def parsed(args):
    """`args` (launcher()'s python arguments) as the engine's own parser reads them."""
    if args[1] == "torch.distributed.run":
        from torch.distributed.run import get_args_parser

        return vars(get_args_parser().parse_args([*args[2:], "-m", "core.train"]))
    from accelerate.commands.launch import launch_command_parser

    return vars(launch_command_parser().parse_args([*args[2:], "-m", "core.train"]))


@pytest.mark.parametrize(
    "engine", [[], ["launch.accelerate_config=configs/accelerate/ddp.yaml"]], ids=["torchrun", "accelerate"]
)
def test_a_four_machine_config_builds_what_the_engines_accept(engine):
    sets = [
        "launch.num_machines=4",
        "launch.num_processes=8",
        "launch.main_process_ip=10.0.0.1",
        "launch.main_process_port=29555",
        "num_generations=32",
        *engine,
    ]
    for rank in range(4):
        cfg = load_config(sets=[*sets, f"launch.machine_rank={rank}"])
        args = parsed(launcher(cfg))
        if engine:
            assert (
                args["num_processes"],
                args["num_machines"],
                args["machine_rank"],
                args["main_process_ip"],
                args["main_process_port"],
            ) == (32, 4, rank, "10.0.0.1", 29555)  # accelerate counts all 32
        else:
            assert (
                args["nnodes"],
                args["nproc_per_node"],
                args["node_rank"],
                args["master_addr"],
                args["master_port"],
            ) == ("4", "8", rank, "10.0.0.1", 29555)
    commands = machine_commands(cfg, ["--config", "configs/gpu.yaml"])
    assert commands[3] == "python -m core.train --config configs/gpu.yaml --set launch.machine_rank=3"


@pytest.mark.parametrize(
    "sets, message",
    [
        (["launch.num_machines=2", "launch.machine_rank=2", "launch.main_process_ip=h0"], "expected 0 to 1"),
        (["launch.num_machines=2"], "needs launch.main_process_ip"),
        (
            ["launch.num_machines=3", "launch.main_process_ip=h0", "num_generations=16"],
            "= 1 x 8 x 3 = 24 completions, which must be whole groups of num_generations=16",
        ),
        (["launch.main_process_port=70000"], "expected a port number"),
    ],
)
def test_impossible_machine_settings_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(sets=sets)


def test_machine_settings_come_from_the_environment_a_slurm_script_fills():
    env = {"NUM_MACHINES": "2", "MACHINE_RANK": "1", "MAIN_PROCESS_IP": "node-a", "MAIN_PROCESS_PORT": "29600"}
    launch = load_config(env=env).launch
    assert (launch.num_machines, launch.machine_rank, launch.main_process_ip, launch.main_process_port) == (
        2,
        1,
        "node-a",
        29600,
    )


def test_a_vllm_server_that_does_not_answer_is_one_line():
    port = free_port()  # nothing listens there
    cfg = load_config(
        sets=[
            "grpo.use_vllm=true",
            "grpo.vllm_mode=server",
            "grpo.vllm_server_host=127.0.0.1",
            f"grpo.vllm_server_port={port}",
        ]
    )
    with pytest.raises(ConfigError, match=f"no vLLM server answers at 127.0.0.1:{port}"):
        check_vllm_server(cfg)
    with socket.socket() as listening:  # something answers: no error
        listening.bind(("127.0.0.1", port))
        listening.listen()
        check_vllm_server(cfg)


def test_the_slurm_script_is_valid_bash_and_uses_the_documented_variables():
    script = (ROOT / "scripts" / "slurm_train.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "slurm_train.sh")]).returncode == 0
    for name in (
        "NUM_MACHINES",
        "MACHINE_RANK",
        "MAIN_PROCESS_IP",
        "SLURM_JOB_NODELIST",
        "SLURM_NODEID",
        "trl vllm-serve",
        "grpo.vllm_mode=server",
    ):
        assert name in script, name
    assert os.access(ROOT / "scripts" / "slurm_train.sh", os.X_OK)


@pytest.mark.slow
def test_the_launch_page_shows_each_machines_command_and_launches_nothing(tmp_path, monkeypatch):
    import yaml
    from streamlit.testing.v1 import AppTest

    from core.runs import list_runs
    from tests.dashboard_fixtures import make_runs

    runs = make_runs(tmp_path)
    config = yaml.safe_load((runs["html"] / "run.yaml").read_text())
    config["launch"].update(num_machines=2, main_process_ip="10.0.0.1")  # a run made for two machines
    (runs["html"] / "run.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["from_run"] = "html"
    at.switch_page("app_pages/launch.py")
    at.run()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    codes = [c.value for c in at.code if "launch.machine_rank=" in c.value]
    assert len(codes) == 2 and codes[1].endswith("--set launch.machine_rank=1")
    assert any("is not launched from here" in w.value for w in at.warning)
    assert sorted(r["name"] for r in list_runs(tmp_path)) == ["crashed", "html", "learning"]  # nothing launched
