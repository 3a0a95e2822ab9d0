"""Run directories: status files, listing, launching, stopping and deleting runs.

`status.json` holds state (starting, running, finished, failed, stopped), pid, started_at,
ended_at, exit_code, error, global_step and max_steps (README, "The run directory").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from core.config import ENV_KEYS, ConfigError
from core.tail import last_lines

STATES = ("starting", "running", "finished", "failed", "stopped")


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint-<step>/ folders, oldest first."""
    found = [p for p in Path(run_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The run's newest checkpoint-<step>/ folder; ConfigError when there is none to resume from."""
    found = checkpoints(run_dir)
    if not (Path(run_dir) / "run.yaml").is_file() or not found:
        raise ConfigError(f"cannot resume '{run_dir}': it needs a run.yaml and a checkpoint-<step> folder "
                          "(runs save one when stopped, and every train.save_steps steps)")
    return found[-1]


def read_json(path: str | Path) -> dict | None:
    """A JSON file that should hold an object; None when it is missing, unreadable or something else."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "status.json") or {}


def update_status(run_dir: str | Path, **fields) -> dict:
    """Merge `fields` into status.json and write it back atomically."""
    status = {**read_status(run_dir), **fields}
    assert status.get("state") in STATES, status.get("state")
    write_json_atomic(Path(run_dir) / "status.json", status)
    return status


# ---- listing, launching and stopping runs (the dashboard calls these) ------------------------

NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
LIVE_STATES = ("starting", "running")


def safe_run_name(name: str) -> str:
    """A run name that is one plain folder name: letters, digits, '.', '_' and '-' only."""
    cleaned = NAME_RE.sub("_", name.strip()).strip("._-")[:120]
    if not cleaned:
        raise ValueError(f"name {name!r} has no usable characters: use letters, digits, '.', '_' or '-'")
    return cleaned


def run_path(root: str | Path, name: str) -> Path:
    """The folder of run `name` under `root`; never a path outside it."""
    root = Path(root).resolve()
    path = (root / safe_run_name(name)).resolve()
    if path.parent != root:
        raise ValueError(f"run name {name!r} points outside the runs folder {root}")
    return path


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap our own finished children (else they linger as zombies)
        if done:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_state(status: dict) -> str:
    """The state to show: a run whose process is gone without a final state has crashed."""
    state = status.get("state", "unknown")
    if state in LIVE_STATES and not pid_alive(status.get("pid")):
        return "crashed"
    return state


def _last_metric(run_dir: Path, name: str):
    """The latest value of metric `name` in the run's metrics.jsonl (within its last 64 KiB)."""
    for line in reversed(last_lines(run_dir / "metrics.jsonl")):
        try:
            value = json.loads(line).get(name)
        except (ValueError, AttributeError):
            continue
        if value is not None:
            return value
    return None


def run_info(run_dir: Path) -> dict:
    """One row of the runs table."""
    status = read_status(run_dir)
    config = read_config(run_dir)
    summary = read_json(run_dir / "eval" / "summary.json") or {}
    started, ended = status.get("started_at"), status.get("ended_at")
    state = effective_state(status)
    end = ended or (time.time() if state in LIVE_STATES else None)
    return {
        "name": run_dir.name, "model": config.get("model_name"), "state": state,
        "step": status.get("global_step", 0),
        "num_train_steps": status.get("max_steps") or config.get("train", {}).get("num_train_steps"),
        "reward": _last_metric(run_dir, "reward"),
        "eval_before": summary.get("before", {}).get("eval_accuracy"),
        "eval_after": summary.get("after", {}).get("eval_accuracy"),
        "started": started, "duration": (end - started) if started and end else None,
        "error": status.get("error"), "path": str(run_dir),
    }


def read_config(run_dir: Path) -> dict:
    """The run's run.yaml as a plain mapping; {} when it is missing, unreadable or not a mapping."""
    try:
        config = yaml.safe_load((Path(run_dir) / "run.yaml").read_bytes())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def list_runs(root: str | Path) -> list[dict]:
    """Every run under `root` (a folder with run.yaml or status.json), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [run_info(p) for p in root.iterdir()
            if p.is_dir() and ((p / "run.yaml").exists() or (p / "status.json").exists())]
    return sorted(runs, key=lambda r: r["started"] or 0, reverse=True)


def launch(config: dict, root: str | Path, name: str, repo: str | Path = ".") -> Path:
    """Start `python -m core.train` for `config` (a resolved config dict) as run `name`:
    its own process group, output to train.log. Returns the run directory."""
    run_dir = run_path(root, name)
    if run_dir.exists():
        raise ValueError(f"a run named '{run_dir.name}' already exists: choose another name")
    run_dir.mkdir(parents=True)
    config = {**config, "train": {**config["train"], "output_dir": str(run_dir)}}
    (run_dir / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = _start(run_dir, ["--config", str(run_dir / "run.yaml")], repo)
    if not (run_dir / "status.json").exists():  # the trainer overwrites this as soon as it starts
        write_json_atomic(run_dir / "status.json", {"state": "starting", "pid": proc.pid, "started_at": time.time(),
                                                    "global_step": 0, "max_steps": config["train"]["num_train_steps"]})
    return run_dir


def resume(run_dir: str | Path, repo: str | Path = ".", num_train_steps: int | None = None) -> None:
    """Continue a run that is not live from its latest checkpoint (to `num_train_steps` steps,
    default its own target)."""
    run_dir = Path(run_dir)
    if effective_state(read_status(run_dir)) in LIVE_STATES:
        raise ValueError(f"run '{run_dir.name}' is still running")
    latest_checkpoint(run_dir)  # fail here, with the reason, rather than in the subprocess
    steps = num_train_steps or read_config(run_dir)["train"]["num_train_steps"]
    old_pid = update_status(run_dir, state="starting", ended_at=None).get("pid")
    proc = _start(run_dir, ["--resume", str(run_dir), "--set", f"train.num_train_steps={steps}"], repo)
    if read_status(run_dir).get("pid") == old_pid:  # unless the trainer already wrote its own
        update_status(run_dir, pid=proc.pid)


def _start(run_dir: Path, args: list[str], repo: str | Path) -> subprocess.Popen:
    """`python -m core.train ARGS` in its own process group, output appended to train.log."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}  # run.yaml is the whole config
    with open(run_dir / "train.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "core.train", *args], cwd=repo, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(run_dir: str | Path) -> bool:
    """Ask a live run to stop: SIGTERM to its trainer (rank 0), which ends training at the next
    step boundary on every rank (core.train.any_rank). False if the run is not live."""
    status = read_status(run_dir)
    pid = status.get("pid")
    if status.get("state") not in LIVE_STATES or not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def delete(run_dir: str | Path, root: str | Path) -> None:
    """Remove a run directory that is not live."""
    run_dir = run_path(root, Path(run_dir).name)
    if effective_state(read_status(run_dir)) in LIVE_STATES:
        raise ValueError(f"run '{run_dir.name}' is still running: stop it first")
    shutil.rmtree(run_dir)


def log_tail(run_dir: str | Path, lines: int = 40) -> str:
    """The end of the run's train.log, a line still being written included (a progress bar)."""
    return "\n".join(last_lines(Path(run_dir) / "train.log", 32768, partial=True)[-lines:])


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "grpo":
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif key == "grpo":
            flat.update({f"grpo.{k}": v for k, v in value.items()})
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(run_dirs: dict[str, Path]) -> list[dict]:
    """The settings in which these runs differ (their folders apart): one row per dotted key, with
    each run's value in effect under its name."""
    from core.config import load_config, setting

    flat = {name: _flatten(read_config(path)) for name, path in run_dirs.items()}
    keys = sorted({k for f in flat.values() for k in f} - {"train.output_dir"})
    configs = {}
    for name, path in run_dirs.items():
        try:
            configs[name] = load_config(Path(path) / "run.yaml")
        except ConfigError:
            configs[name] = None  # unreadable: shown with the values it wrote, if any

    def value(name, key):
        if key in flat[name]:
            return flat[name][key]
        return setting(configs[name], key) if configs[name] is not None else None

    rows = []
    for key in keys:
        values = {name: value(name, key) for name in run_dirs}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"key": key, **{name: "–" if v is None else str(v) for name, v in values.items()}})
    return rows
