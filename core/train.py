"""One GRPO run, start to finish: config → model → data → reward → trainer → eval → train → save → eval.

    python -m core.train --config configs/tiny_cpu.yaml [--set train.num_train_steps=10 ...]
    python -m core.train --resume runs/<run> [--set train.num_train_steps=200]

With launch.num_processes > 1 (or launch.accelerate_config) this command starts the workers
itself, through torchrun (or accelerate launch), each running this same module.

Everything the run produces lands in its run directory (`train.output_dir`; README, "The run
directory"): run.yaml, status.json, metrics.jsonl, rollouts/, eval/, model/, train.log. It holds the
folder's lock for its whole life. SIGTERM during training stops at the next step boundary, saves
the model and a checkpoint (for --resume); in any other phase it stops at once; either way the run
ends with state `stopped` and exit code 0. A bad config or data file prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import yaml

from core.config import GRPO_FROM_CONFIG, ConfigError, RunConfig, load_config
from core.model import check_vllm, load_model, pick_device
from core.runs import (StatusFile, checked_status, checkpoints, latest_checkpoint, lock_run_dir, read_status,
                       update_status)


def grpo_args(cfg: RunConfig, device: str):
    """TRL's GRPOConfig: the fields this config sets (config.GRPO_FROM_CONFIG), defaults for this
    device, and the `grpo:` passthrough."""
    from trl import GRPOConfig

    defaults = dict(
        generation_batch_size=cfg.train.per_device_train_batch_size * cfg.num_generations,
        bf16=device == "cuda",
        use_cpu=device == "cpu",  # also makes several CPU processes (torchrun) train together over gloo
    )
    settings = {name: value(cfg) for name, (_, value) in GRPO_FROM_CONFIG.items()}
    return GRPOConfig(**{**defaults, **cfg.grpo, **settings})


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
        self._again = False  # the stop was swallowed: the next SIGTERM is the same stop, raised again
        signal.signal(signal.SIGTERM, self._handle)
        self._report_unraisable = sys.unraisablehook
        sys.unraisablehook = self._swallowed

    def _handle(self, signum, frame):
        if self._again:
            self._again = False
            self.check()
            return
        again, self.requested = self.requested, True
        print(f"SIGTERM received: stopping {'now' if self.interruptible else 'after the current step'}",
              file=sys.stderr, flush=True)
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

    def _swallowed(self, unraisable) -> None:
        """Python's hook for an exception it cannot raise (in a `__del__`, which the signal handler can
        run in, as anywhere): the stop is asked for again in a moment, once the finaliser is over, and
        lands in the code after it."""
        if unraisable.exc_type is StopRequested:
            import threading

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


def run_dir_callback(run_dir: Path, stop: GracefulStop, status: StatusFile | None, periodic_eval=None):
    """A TrainerCallback that writes metrics.jsonl and status progress, evaluates every
    `train.eval_steps` steps, and ends training when a stop was requested on any rank."""
    from transformers import TrainerCallback

    class RunDirCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if any_rank(stop.requested, args.device):
                stop.requested = True
                control.should_training_stop = True
                control.should_save = True  # a checkpoint-<step>/ to --resume from
            if state.is_world_process_zero:
                status.update(global_step=state.global_step, phase_done=state.global_step)
                if periodic_eval is not None:
                    periodic_eval(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log_metrics(run_dir, state.global_step, logs)

    return RunDirCallback()


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


def attempt() -> int:
    """Which start of its run this process belongs to (core.train's main sets it for its workers)."""
    return int(os.environ.get("SIMPLE_GRPO_ATTEMPT", "1"))


def log_metrics(run_dir: Path, step: int, metrics: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "time": time.time(), "attempt": attempt(), **metrics}) + "\n")


def train(cfg: RunConfig, run_dir: Path, stop: GracefulStop, status: StatusFile | None,
          resume: Path | None = None) -> str:
    """The run's steps; returns the final state (`finished` or `stopped`). With `resume`, training
    continues from that checkpoint and the eval before training is the one already on file."""
    import transformers
    from trl import GRPOTrainer

    from core.data import load_rows, to_dataset
    from core.evaluate import evaluate_run
    from core.rewards import resolve_reward
    from core.rollouts import RolloutRecorder, logged_rewards
    from core.stop_at_final import end_at_final_line

    device, e = pick_device(), cfg.eval

    def phase(name: str, done: int | None = None, total: int | None = None) -> None:
        """Report what the run is doing and how far it got (status.json on rank 0, and the log)."""
        stop.check()
        if status is not None:
            if status.fields.get("phase") != name:
                print(f"phase: {name}", flush=True)
            status.update(phase=name, phase_done=done, phase_total=total)

    check_vllm_server(cfg)
    if cfg.grpo.get("use_vllm"):
        check_vllm(device)
    if e.enabled and e.backend == "vllm":
        check_vllm(device, "eval.backend=vllm")
    try:  # a custom reward's module is imported now, when the run starts, not when its config is read
        specs = [(r["name"], resolve_reward(r["name"]), r["weight"]) for r in cfg.rewards]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    phase("loading data")
    train_rows, eval_rows = load_rows(cfg.dataset, cfg.train.seed)  # bad data fails before a model loads
    transformers.set_seed(cfg.train.seed)
    phase("loading model")
    model, tokenizer = load_model(cfg, device)
    if cfg.stop_at_final:
        end_at_final_line(model, tokenizer)  # sampling and eval end a completion at its Final line
    train_set, eval_set = to_dataset(train_rows, tokenizer), to_dataset(eval_rows, tokenizer)
    stop.check()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        stop.joined()
    args = grpo_args(cfg, device)  # the workers of a multi-process run meet here
    rewards = logged_rewards(specs, RolloutRecorder(run_dir, args.process_index, attempt()), cfg.num_generations)

    def periodic_eval(step: int) -> None:
        if step % cfg.train.eval_steps == 0 and step < cfg.train.num_train_steps:
            summary = evaluate_run(cfg, run_dir, model, tokenizer, eval_set)
            log_metrics(run_dir, step, {k: v for k, v in summary.items() if k != "n"})

    is_main = status is not None
    callback = run_dir_callback(run_dir, stop, status, periodic_eval if e.enabled and cfg.train.eval_steps else None)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=train_set,
                          processing_class=tokenizer, callbacks=[callback])
    if is_main:
        status.update(state="running")
        print(f"training with {args.world_size} process(es), {trainer.accelerator.distributed_type.value}", flush=True)
    summaries = {}
    stop.interruptible = is_main  # rank 0 alone evaluates (and is signalled): the others wait for its word below
    try:
        if e.enabled and is_main and resume is None:
            phase("eval before", 0, len(eval_set))
            summaries["before"] = evaluate_run(cfg, run_dir, model, tokenizer, eval_set, "before",
                                               progress=lambda done, total: phase("eval before", done, total))
        stop.check()
    except StopRequested:
        pass  # stop.requested is set: every rank hears of it just below
    stop.interruptible = False  # from here a stop waits for the step, then saves a checkpoint
    if any_rank(stop.requested, args.device):  # all ranks agree, before any of them trains
        return "stopped"
    phase("training", 0, cfg.train.num_train_steps)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    phase("saving")
    trainer.save_model(str(run_dir / "model"))
    if is_main:
        tokenizer.save_pretrained(run_dir / "model")
    if stop.requested:
        return "stopped"
    stop.interruptible = is_main  # the other ranks are done: rank 0's eval after can end at once
    if e.enabled and is_main:
        phase("eval after", 0, len(eval_set))
        summaries["after"] = evaluate_run(cfg, run_dir, model, tokenizer, eval_set, "after",
                                          progress=lambda done, total: phase("eval after", done, total))
    stop.interruptible = False
    if cfg.runtime.use_wandb and is_main:
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update({f"eval_{phase}/{k}": v for phase, s in summaries.items() for k, v in s.items()})
            wandb.finish()
    return "finished"


def run(cfg: RunConfig, stop: GracefulStop, resume: Path | None = None) -> int:
    """Run `cfg` in its run directory (continuing from checkpoint `resume`), keeping status.json
    true (rank 0 writes it); returns the exit code."""
    run_dir = Path(cfg.train.output_dir)
    status = None
    if cfg.runtime.use_wandb:
        os.environ.setdefault("WANDB_PROJECT", "simple_grpo")
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not os.environ.get("SIMPLE_GRPO_LOGGED"):  # started from a terminal: keep a train.log too
                log = open(run_dir / "train.log", "a", encoding="utf-8", buffering=1)
                sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
            (run_dir / "run.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            earlier = checked_status(run_dir)[0] if resume else {}
            start = {"started_at": earlier.get("started_at"), "global_step": earlier.get("global_step", 0)} \
                if resume else {"started_at": time.time(), "global_step": 0}
            status = StatusFile(run_dir, state="starting", ended_at=None, exit_code=None, error=None,
                                max_steps=cfg.train.num_train_steps, attempt=attempt(), **start)
        state = train(cfg, run_dir, stop, status, resume)
    except StopRequested:
        stop.interruptible = False  # from here on the run is ending: a further SIGTERM cuts nothing
        state = "stopped"
    except ConfigError as e:
        if status:
            status.update(state="failed", error=str(e), exit_code=2, ended_at=time.time())
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        if status:
            status.update(state="failed", error=f"{type(e).__name__}: {e}", exit_code=1, ended_at=time.time())
        raise
    if status:
        status.update(state=state, exit_code=0, ended_at=time.time())
        print(f"run {state}: {run_dir}", flush=True)
        if state == "stopped":
            where, found = status.fields.get("phase"), checkpoints(run_dir)
            print(f"stopped during {where}: " + (
                f"training is done and model/ holds the result: python -m core.evaluate {run_dir} --phase after "
                "evaluates it" if where == "eval after" else
                f"python -m core.train --resume {run_dir} continues from {found[-1].name}" if found else
                "no checkpoint was saved yet, so there is nothing to resume: launch it again"), flush=True)
    return 0


def hold_run_dir(run_dir: Path, machine_rank: int = 0) -> int | None:
    """Take the run folder's lock for the life of this process and of the launcher it may exec
    into (workers, started under it, find LOCAL_RANK set and leave it; the other machines of a
    multi-machine run leave it to machine 0); ConfigError when a live run holds it."""
    if "LOCAL_RANK" in os.environ or machine_rank > 0:
        return None
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder '{run_dir}' is a file: give train.output_dir a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(run_dir)
    if lock is None:
        raise ConfigError(f"run folder '{run_dir}' is in use by a live run (pid {read_status(run_dir).get('pid')}): "
                          "wait for it to end or stop it, or give this run another train.output_dir")
    os.set_inheritable(lock, True)  # kept through the exec into torchrun / accelerate launch
    return lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config, e.g. configs/tiny_cpu.yaml (defaults apply without one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.num_train_steps=10 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint, with its "
                        "run.yaml (plus any --set, e.g. more steps); rollouts and metrics keep appending")
    args = parser.parse_args(argv)
    first_of_several = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK") == "0"
    stop = GracefulStop(launcher=os.getppid() if first_of_several else None)  # first: a stop is never lost
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a launcher holds it until now (core.runs)
        resume = lock = None
        if args.resume:
            config = args.config or Path(args.resume) / "run.yaml"
            cfg = load_config(config, [*args.set, f"train.output_dir={args.resume}"], env=os.environ) \
                if Path(config).is_file() else None  # without one, latest_checkpoint says what is missing
            if Path(args.resume).is_dir():
                lock = hold_run_dir(Path(args.resume), cfg.launch.machine_rank if cfg else 0)
            resume = latest_checkpoint(args.resume)
        else:
            cfg = load_config(args.config, args.set, env=os.environ)
            lock = hold_run_dir(Path(cfg.train.output_dir), cfg.launch.machine_rank)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StopRequested:
        folder = Path(args.resume or Path(args.config or ".").parent)  # a dashboard launch: RUN/run.yaml
        if read_status(folder).get("pid") == os.getpid():  # the launcher's placeholder names us: settle it
            update_status(folder, state="stopped", exit_code=0, ended_at=time.time())
        print("stopped before the run began", flush=True)
        return 0
    if "SIMPLE_GRPO_ATTEMPT" not in os.environ:  # numbered once, here, for this process and its workers
        earlier = read_status(cfg.train.output_dir).get("attempt") if resume else None
        os.environ["SIMPLE_GRPO_ATTEMPT"] = str((earlier if isinstance(earlier, int) else 1) + 1 if resume else 1)
    if cfg.runtime.mps_fallback and sys.platform == "darwin":
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # before torch is imported
    launch = cfg.launch
    if (launch.num_processes > 1 or launch.num_machines > 1 or launch.accelerate_config) and \
            "LOCAL_RANK" not in os.environ:
        # Become the launcher, which starts the workers: this same command, with the run folder fixed.
        command = [sys.executable, *launcher(cfg), "-m", "core.train", *(sys.argv[1:] if argv is None else argv),
                   "--set", f"train.output_dir={cfg.train.output_dir}"]
        print(f"starting the workers: {shlex.join(command[1:])}", flush=True)
        os.execv(sys.executable, command)
    code = run(cfg, stop, resume)
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
        machines = ["--machine_rank", str(launch.machine_rank), "--main_process_ip", launch.main_process_ip] \
            if m > 1 else []
        return ["-m", "accelerate.commands.launch", "--config_file", launch.accelerate_config,
                "--num_processes", str(n * m), "--num_machines", str(m), *machines,  # accelerate counts all machines'
                "--main_process_port", str(port)]
    if m == 1:
        return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    return ["-m", "torch.distributed.run", f"--nnodes={m}", f"--nproc_per_node={n}", f"--node_rank={launch.machine_rank}",
            f"--master_addr={launch.main_process_ip}", f"--master_port={port}"]


def machine_commands(cfg: RunConfig, args: list[str]) -> list[str]:
    """For a run on several machines: the command to start on each one (`args`: the arguments of
    `python -m core.train`), machine 0 first."""
    return [shlex.join(["python", "-m", "core.train", *args, "--set", f"launch.machine_rank={rank}"])
            for rank in range(cfg.launch.num_machines)]


def check_vllm_server(cfg: RunConfig) -> None:
    """grpo.vllm_mode=server trains against a `trl vllm-serve` that must already answer."""
    if not (cfg.grpo.get("use_vllm") and cfg.grpo.get("vllm_mode") == "server"):
        return
    host, port = cfg.grpo.get("vllm_server_host", "0.0.0.0"), int(cfg.grpo.get("vllm_server_port", 8000))
    try:
        socket.create_connection(("127.0.0.1" if host == "0.0.0.0" else host, port), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"no vLLM server answers at {host}:{port} ({e.strerror or e}): start it first "
                          "(trl vllm-serve --model <model>, on its own GPU or node), or fix grpo.vllm_server_host "
                          "and grpo.vllm_server_port") from None


if __name__ == "__main__":
    sys.exit(main())
