"""The process around a GRPO run, so that core/grpo.py holds the learning steps and nothing else.

core/grpo.py's `train(cfg, run, resume)` learns; this module gives it `run`, a `Lifecycle`, and
keeps everything a run needs that is not learning:

- the run folder's lock (core.runstate), taken first and held for the process's life, through the exec
  into a launcher too: one writer per run folder;
- status.json (rank 0): state, phase and progress, the exit code and the error of a failed run;
- stops: SIGTERM during training ends it at the next step boundary on every rank and saves a
  checkpoint (for --resume); in any other phase it stops the run at once (`GracefulStop`);
- train.log for a run started from a terminal (`Tee`), the attempt number of each start, and
  metrics.jsonl (the trainer callback);
- several processes: `main` becomes torchrun (or accelerate launch), which starts the workers, each
  running `python -m core.train` again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import yaml

from core import collector_paused
from core.config import RunConfig, load_config, trackers
from core.errors import ConfigError
from core.model import damaged_weights
from core.rollouts import RolloutRecorder
from core.rundir import (
    checked_status,
    checkpoints,
    config_path,
    latest_checkpoint,
    log_path,
    metrics_path,
    read_status,
    run_outputs,
    tensorboard_dir,
)
from core.runstate import StatusFile, lock_run_dir, update_status


class StopRequested(BaseException):
    """SIGTERM while no training step or save is under way: the run ends where it stands. A
    BaseException, like KeyboardInterrupt, so that code which wraps the exceptions it catches (a lazy
    import that fails, say) lets it through as it is."""


class GracefulStop:
    """SIGTERM during training (or while the model is saved) sets a flag: the trainer callback ends
    training at the next step boundary and a checkpoint is saved. In any other phase (loading,
    building the model, an eval) there is nothing to finish: SIGTERM raises StopRequested there and
    then. Should it land in a finaliser (a `__del__`), where Python only reports an exception, it is
    raised again just after (`_swallowed`), and `check()` raises it at each phase boundary or eval
    batch until the run has caught it. Once the run is ending, a SIGTERM only sets the flag, so
    nothing is cut twice.

    The workers of a multi-process run load side by side, each on its own, until they meet to form
    their process group: rank 0, stopped while they load, passes the SIGTERM on to the other workers
    of its `launcher` (torchrun's or accelerate's agent), so that all of them stop at once and none
    is left waiting for the others."""

    def __init__(self, interruptible: bool = True, launcher: int | None = None):
        self.requested = False
        self.interruptible = interruptible
        self.launcher = launcher
        self.phase = None  # what the run is doing, as Lifecycle.phase last said
        self.during = None  # what it was doing when the stop was asked for (a stop in training ends in saving)
        self._again = False  # the stop was swallowed: the next SIGTERM is the same stop, raised again
        signal.signal(signal.SIGTERM, self._handle)
        self._report_unraisable = sys.unraisablehook
        sys.unraisablehook = self._swallowed

    def _handle(self, signum, frame):
        if self._again:
            self._again = False
            self.check()
            return
        again = self.requested
        self.request()
        print(
            f"SIGTERM received: stopping {'now' if self.interruptible else 'after the current step'}",
            file=sys.stderr,
            flush=True,
        )
        if self.interruptible and self.launcher:
            import psutil

            launcher, self.launcher = self.launcher, None
            try:
                for worker in psutil.Process(launcher).children():
                    if worker.pid != os.getpid():
                        worker.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass  # the launcher or a worker is gone already
        if not again:  # a further SIGTERM, while the first one unwinds the run, only sets the flag
            self.check()

    def request(self) -> None:
        """A stop is asked for: from a SIGTERM here, or from another rank (any_rank at a step's end)."""
        if not self.requested:
            self.requested, self.during = True, self.phase

    def _swallowed(self, unraisable) -> None:
        """Python's hook for an exception it cannot raise (in a `__del__`, which the signal handler can
        run in, as anywhere): the stop is asked for again in a moment, once the finaliser is over, and
        lands in the code after it."""
        if unraisable.exc_type is StopRequested:
            self._again = True
            timer = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
        else:
            self._report_unraisable(unraisable)

    def check(self) -> None:
        """Raise StopRequested if a stop was asked for where one is honoured at once: from the signal
        handler, and again at each phase boundary or eval batch until the run has caught it (a worker
        whose stop was lost would go on loading and wait for ever for the others to meet it). Whoever
        catches it sets `interruptible` off: from then on the run is ending."""
        if self.requested and self.interruptible:
            self.launcher = None
            raise StopRequested

    def joined(self) -> None:
        """The workers are about to form their process group: from here they stop together, at a step
        boundary (any_rank), and rank 0 alone is signalled."""
        self.interruptible, self.launcher = False, None


def any_rank(flag: bool, device) -> bool:
    """True on every process if `flag` is true on any (a stop signal seen by one rank stops all
    of them at the same step, as distributed training needs)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def attempt() -> int:
    """Which start of its run this process belongs to (`main` numbers it for its workers)."""
    return int(os.environ.get("SIMPLE_GRPO_ATTEMPT", "1"))


def log_metrics(run_dir: Path, step: int, metrics: dict) -> None:
    with open(metrics_path(run_dir), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "time": time.time(), "attempt": attempt(), **metrics}) + "\n")


class Lifecycle:
    """What core/grpo.py's `train` is given besides its config: where the run's files go, and a
    line each for what the process around it must know (the phase, when stops are honoured, when
    the workers meet)."""

    def __init__(self, run_dir: Path, stop: GracefulStop, status: StatusFile | None):
        self.dir, self.stop, self.status = run_dir, stop, status
        self.is_main = status is not None  # rank 0: it writes status.json and evaluates
        self.trained = False  # a step of this start done: from then on its settings are the run's

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Report what the run is doing and how far it got (status.json on rank 0, and the log); a
        stop asked for meanwhile ends the run here."""
        self.stop.check()
        self.stop.phase = name
        if self.status is not None:
            if self.status.fields.get("phase") != name:
                print(f"phase: {name}", flush=True)
            self.status.update(phase=name, phase_done=done, phase_total=total)

    def progress(self, name: str):
        """`phase(name, done, total)` as a progress callback (an eval reports each batch)."""
        return lambda done, total: self.phase(name, done, total)

    def workers_meet(self) -> None:
        """Called just before the workers of a multi-process run form their process group (TRL's
        arguments do that): from here they stop together, at a step boundary."""
        self.stop.check()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.stop.joined()

    def recorder(self, rank: int) -> RolloutRecorder:
        """Where this rank's rollouts go (rollouts/), stamped with this start's attempt number."""
        return RolloutRecorder(self.dir, rank, attempt())

    def callback(self, periodic_eval=None):
        """A TrainerCallback that writes metrics.jsonl and status progress, calls `periodic_eval(step)`
        after each step on rank 0, and ends training when a stop was requested on any rank."""
        from transformers import TrainerCallback

        run = self

        class RunDirCallback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if any_rank(run.stop.requested, args.device):
                    run.stop.request()
                    control.should_training_stop = True
                    control.should_save = True  # a checkpoint-<step>/ to --resume from,
                    args.save_only_model = False  # with the optimizer's state, whatever the run keeps at its save steps
                run.trained = True
                if state.is_world_process_zero:
                    run.status.update(global_step=state.global_step, phase_done=state.global_step)
                    if periodic_eval is not None:
                        periodic_eval(state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    log_metrics(run.dir, state.global_step, logs)

        return RunDirCallback()

    def log_metrics(self, step: int, metrics: dict) -> None:
        log_metrics(self.dir, step, metrics)

    def running(self, trainer) -> None:
        """The trainer is built: the run's state is `running` (status.json), and the log says how."""
        if self.is_main:
            self.status.update(state="running")
            print(
                f"training with {trainer.args.world_size} process(es), {trainer.accelerator.distributed_type.value}",
                flush=True,
            )

    @contextmanager
    def stoppable_on_main(self):
        """A stretch that rank 0 alone works through (an eval) while the other ranks wait: a stop there
        ends it at once, and the run at the next `stopped` or `stop_agreed`; elsewhere a stop waits for
        the current training step."""
        self.stop.interruptible = self.is_main
        try:
            yield
        except StopRequested:
            pass  # stop.requested is set: the caller asks stopped / stop_agreed next
        finally:
            self.stop.interruptible = False

    @property
    def stopped(self) -> bool:
        """A stop was asked for (on this process)."""
        return self.stop.requested

    def stop_agreed(self, device) -> bool:
        """Whether a stop was asked for on any rank; every rank gets the same answer."""
        return any_rank(self.stop.requested, device)


class Tee:
    """A stream that also appends to the run's train.log, so that a run started from a terminal has
    the log a dashboard launch has (the launcher redirects its output there itself)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_in_folder(pipeline, cfg: RunConfig, stop: GracefulStop, resume: Path | None = None) -> int:
    """Run `pipeline(cfg, lifecycle, resume)` in the run folder, keeping status.json true (rank 0
    writes it) whatever happens; returns the exit code."""
    run_dir = Path(cfg.train.output_dir)
    status = earlier_config = run = None
    if "wandb" in trackers(cfg):
        os.environ.setdefault("WANDB_PROJECT", "simple_grpo")
        os.environ.setdefault("WANDB_DIR", str(run_dir))  # its local files (wandb/) in the run folder, not ./wandb
    if "tensorboard" in trackers(cfg):  # transformers' TensorBoard callback writes there
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(run_dir))
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not os.environ.get("SIMPLE_GRPO_LOGGED"):  # started from a terminal: keep a train.log too
                log = open(log_path(run_dir), "a", encoding="utf-8", buffering=1)
                sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
            earlier_config = config_path(run_dir).read_text(encoding="utf-8") if resume else None
            config_path(run_dir).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            earlier = checked_status(run_dir)[0] if resume else {}
            start = (
                {"started_at": earlier.get("started_at"), "global_step": earlier.get("global_step", 0)}
                if resume
                else {"started_at": time.time(), "global_step": 0}
            )
            status = StatusFile(
                run_dir,
                state="starting",
                ended_at=None,
                exit_code=None,
                error=None,
                max_steps=cfg.train.num_train_steps,
                attempt=attempt(),
                **start,
            )
        run = Lifecycle(run_dir, stop, status)
        state = pipeline(cfg, run, resume)
    except StopRequested:
        stop.interruptible = False  # from here on the run is ending: a further SIGTERM cuts nothing
        end_children()
        state = "stopped"
    except ConfigError as e:
        if status:
            status.update(state="failed", error=str(e), exit_code=2, ended_at=time.time())
            keep_config_unless_trained(run_dir, earlier_config, run)
        if e.__cause__ is not None:  # a reward that raised mid-run (core.rewards.called): where, for train.log
            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        if status:
            status.update(state="failed", error=f"{type(e).__name__}: {e}", exit_code=1, ended_at=time.time())
            keep_config_unless_trained(run_dir, earlier_config, run)
        raise
    if status:
        status.update(state=state, exit_code=0, ended_at=time.time())
        print(f"run {state}: {run_dir}", flush=True)
        if state == "stopped":
            where, found = stop.during or status.fields.get("phase"), checkpoints(run_dir)
            print(
                f"stopped during {where}: "
                + (
                    f"training is done and model/ holds the result: python -m core.evaluate {run_dir} --phase after "
                    "--overwrite evaluates it"
                    if where == "eval after"
                    else f"python -m core.train --resume {run_dir} continues from {found[-1].name}"
                    if found
                    else "no checkpoint was saved yet, so there is nothing to resume: launch it again, into another "
                    "train.output_dir or once this folder is deleted"
                ),
                flush=True,
            )
    return 0


def keep_config_unless_trained(run_dir: Path, earlier_config: str | None, run: Lifecycle | None) -> None:
    """A resume (`earlier_config`: its run.yaml before) that failed before it trained a step (a dataset out
    of reach, a model that does not load) puts the run.yaml back: its settings would otherwise stick to
    the next --resume. status.json says what happened (failed, and why)."""
    if earlier_config is not None and not (run and run.trained):
        config_path(run_dir).write_text(earlier_config, encoding="utf-8")


def end_children() -> None:
    """Kill the processes this one started: a run stopped where it stands leaves none behind. A stop
    that lands while a child starts (the tiny model's builder, at the start of loading) stops this
    process before subprocess.run can kill the child, which would otherwise build on for minutes."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass  # gone already


def hold_run_dir(run_dir: Path, machine_rank: int = 0) -> int | None:
    """Take the run folder's lock for the life of this process and of the launcher it may exec
    into (workers, started under it, find LOCAL_RANK set and leave it; the other machines of a
    multi-machine run leave it to machine 0); ConfigError when a live run holds it."""
    if "LOCAL_RANK" in os.environ or machine_rank > 0:
        return None
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder '{run_dir}' is a file: give train.output_dir a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_run_dir(run_dir)
    except OSError as e:  # a folder no one may write in, a read-only disk
        raise ConfigError(f"cannot write in run folder '{run_dir}' ({e.strerror or e})") from None
    if lock is None:
        raise ConfigError(
            f"run folder '{run_dir}' is in use by a live run (pid {read_status(run_dir).get('pid')}): "
            "wait for it to end or stop it, or give this run another train.output_dir"
        )
    os.set_inheritable(lock, True)  # kept through the exec into torchrun / accelerate launch
    return lock


def main(pipeline, description: str, argv: list[str] | None = None) -> int:
    """`python -m core.train`: read the config (or the run to resume), take the run folder, then run
    `pipeline` in it, or become the launcher of its workers; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m core.train", description=description)
    parser.add_argument("--config", help="YAML config, e.g. configs/tiny_cpu.yaml (defaults apply without one)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.num_train_steps=10 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its latest checkpoint, with its "
        "run.yaml (plus any --set, e.g. more steps); rollouts and metrics keep appending",
    )
    args = parser.parse_args(argv)
    first_of_several = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK") == "0"
    stop = GracefulStop(launcher=os.getppid() if first_of_several else None)  # first: a stop is never lost
    resume = lock = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a launcher holds it until now (core.runs)
        if args.resume:
            config = args.config or config_path(args.resume)
            with collector_paused():  # a config's check may import TRL: core/__init__.py says why
                cfg = (
                    load_config(config, [*args.set, f"train.output_dir={args.resume}"], env=os.environ)
                    if args.config or Path(config).is_file()
                    else None
                )  # without a run.yaml, latest_checkpoint says what is missing
            if Path(args.resume).is_dir():
                lock = hold_run_dir(Path(args.resume), cfg.launch.machine_rank if cfg else 0)
            resume = latest_checkpoint(args.resume, cfg.train.num_train_steps if cfg else None)
            if damaged := damaged_weights(resume):
                raise ConfigError(
                    f"cannot resume '{args.resume}': {resume.name}'s weights are damaged ({damaged}), as a save cut "
                    "short leaves them: "
                    + (
                        f"delete {resume} to resume from the checkpoint before it"
                        if len(checkpoints(args.resume)) > 1
                        else "it is the run's only checkpoint, so the run cannot go on: launch it again, into another "
                        "train.output_dir or once this folder is deleted"
                    )
                )
            if not (resume / "optimizer.pt").is_file():  # a save of the weights only (grpo.save_only_model)
                print(
                    f"note: {resume.name} holds the model's weights only: training continues from them with a "
                    "fresh optimizer and learning-rate schedule (a stopped run's checkpoint holds both)",
                    flush=True,
                )
        else:
            with collector_paused():
                cfg = load_config(args.config, args.set, env=os.environ)
            lock = hold_run_dir(Path(cfg.train.output_dir), cfg.launch.machine_rank)
            if lock is not None and (written := run_outputs(cfg.train.output_dir)):  # never two runs in one folder
                raise ConfigError(
                    f"run folder '{cfg.train.output_dir}' holds a run already ({', '.join(written)}): "
                    + (
                        f"continue it with --resume {cfg.train.output_dir}, "
                        if checkpoints(cfg.train.output_dir)
                        else ""
                    )
                    + "give this run another train.output_dir, or delete that folder first"
                )
    except (ConfigError, StopRequested) as e:
        failed = isinstance(e, ConfigError)
        folder = Path(args.resume or Path(args.config or ".").parent)  # a dashboard launch: RUN/run.yaml
        if read_status(folder).get("pid") == os.getpid():  # the launcher's placeholder names us: settle it
            ended = (
                {"state": "failed", "exit_code": 2, "error": str(e)} if failed else {"state": "stopped", "exit_code": 0}
            )
            update_status(folder, **ended, ended_at=time.time())
        if failed:
            print(f"error: {e}", file=sys.stderr)
        else:
            print("stopped before the run began", flush=True)
        if lock is not None:  # the folder was taken before this: free again (an in-process caller goes on)
            os.close(lock)
        return 2 if failed else 0
    if "SIMPLE_GRPO_ATTEMPT" not in os.environ:  # numbered once, here, for this process and its workers
        earlier = read_status(cfg.train.output_dir).get("attempt") if resume else None
        os.environ["SIMPLE_GRPO_ATTEMPT"] = str((earlier if isinstance(earlier, int) else 1) + 1 if resume else 1)
    if cfg.runtime.mps_fallback and sys.platform == "darwin":
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # before torch is imported
    launch = cfg.launch
    if (
        launch.num_processes > 1 or launch.num_machines > 1 or launch.accelerate_config
    ) and "LOCAL_RANK" not in os.environ:
        # Become the launcher, which starts the workers: this same command, with the run folder fixed.
        command = [
            sys.executable,
            *launcher(cfg),
            "-m",
            "core.train",
            *(sys.argv[1:] if argv is None else argv),
            "--set",
            f"train.output_dir={cfg.train.output_dir}",
        ]
        print(f"starting the workers: {shlex.join(command[1:])}", flush=True)
        os.execv(sys.executable, command)
    code = run_in_folder(pipeline, cfg, stop, resume)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the run is over: a late stop finds nothing to cut
    if lock is not None:
        os.close(lock)  # the run's files are final: let a reader, a resume or a delete have the folder now
    return code


def launcher(cfg: RunConfig) -> list[str]:
    """The `python` arguments that start this machine's launch.num_processes workers: accelerate launch
    with the run's accelerate config (DeepSpeed, FSDP), else torchrun; on several machines, as
    machine launch.machine_rank of launch.num_machines, meeting at machine 0's address and port."""
    n, m, launch = cfg.launch.num_processes, cfg.launch.num_machines, cfg.launch
    if m == 1:
        with socket.socket() as s:  # a free rendezvous port, so that runs side by side do not collide
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        port = launch.main_process_port
    if launch.accelerate_config:
        machines = (
            ["--machine_rank", str(launch.machine_rank), "--main_process_ip", launch.main_process_ip] if m > 1 else []
        )
        return [
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            launch.accelerate_config,
            "--num_processes",
            str(n * m),
            "--num_machines",
            str(m),
            *machines,  # accelerate counts all machines'
            "--main_process_port",
            str(port),
        ]
    if m == 1:
        return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    return [
        "-m",
        "torch.distributed.run",
        f"--nnodes={m}",
        f"--nproc_per_node={n}",
        f"--node_rank={launch.machine_rank}",
        f"--master_addr={launch.main_process_ip}",
        f"--master_port={port}",
    ]


def machine_commands(cfg: RunConfig, args: list[str]) -> list[str]:
    """For a run on several machines: the command to start on each one (`args`: the arguments of
    `python -m core.train`), machine 0 first."""
    return [
        shlex.join(["python", "-m", "core.train", *args, "--set", f"launch.machine_rank={rank}"])
        for rank in range(cfg.launch.num_machines)
    ]
