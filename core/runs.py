"""Runs as the dashboard drives them: listing, launching, resuming, stopping and deleting run folders,
their settings side by side, presets. A run's files are core/rundir.py's; its process state (status,
lock, pid) core/runstate.py's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from core import trl_runs
from core.config import (
    ENV_KEYS,
    RunConfig,
    changed_settings,
    grpo_default,
    grpo_field_types,
    load_config,
    parse_setting,
    read_setting,
    updates_per_batch,
    web_form_problem,
)
from core.config import problems as config_problems
from core.config.values import apply_setting, text_value
from core.errors import ConfigError
from core.rundir import (
    NUMBER,
    checked_status,
    config_path,
    eval_summary_path,
    latest_checkpoint,
    log_path,
    metrics_path,
    read_config,
    read_json,
    read_status,
    safe_run_name,
    status_path,
    whole_number,
    write_json_atomic,
)
from core.runstate import LIVE_STATES, effective_state, is_locked, process_identity, run_process, update_status
from core.tail import last_lines


def _ensure_not_live(run_dir: Path, action: str) -> None:
    """ValueError unless the run is over: its state is final and no trainer holds its folder; and
    never for a plain TRL run, which this dashboard only reads."""
    if trl_runs.is_trl_run(run_dir):
        raise ValueError(f"run '{run_dir.name}' is {trl_runs.READ_ONLY}")
    if effective_state(read_status(run_dir)) in LIVE_STATES or is_locked(run_dir, wait=10):
        raise ValueError(f"run '{run_dir.name}' is still running{action}")


# ---- listing, launching and stopping runs (the dashboard calls these) ------------------------


def run_folder(root: str | Path, name: str) -> Path:
    """The folder of the listed run `name` under `root`, exactly as it is named (a run made from
    the command line may be called `exp 1`): never re-sanitised, never outside `root`, never a
    symlink (list_runs does not list those). ValueError when there is no such run folder."""
    path = Path(root) / name
    if not name or name in (".", "..") or "/" in name or "\0" in name or path.is_symlink() or not path.is_dir():
        raise ValueError(f"there is no run folder named {name!r} in {root}")
    return path


def run_path(root: str | Path, name: str) -> Path:
    """The folder of run `name` under `root`; never a path outside it."""
    root = Path(root).resolve()
    path = (root / safe_run_name(name)).resolve()
    if path.parent != root:
        raise ValueError(f"run name {name!r} points outside the runs folder {root}")
    return path


def _last_metric(run_dir: Path, name: str):
    """The latest value of metric `name` in the run's metrics.jsonl (within its last 64 KiB)."""
    for line in reversed(last_lines(metrics_path(run_dir))):
        try:
            value = json.loads(line).get(name)
        except (ValueError, AttributeError):
            continue
        if value is not None:
            return value
    return None


def _summary(run_dir: Path) -> tuple[dict, str | None]:
    """(eval/summary.json's phases, why it cannot be trusted or None)."""
    path = eval_summary_path(run_dir)
    if not path.exists():
        return {}, None
    summary = read_json(path)
    if summary is None:
        return {}, "eval/summary.json is not a JSON object"
    for phase, value in summary.items():
        if not isinstance(value, dict) or not isinstance(value.get("eval_accuracy"), NUMBER):
            return {}, f"eval/summary.json has {phase} {value!r}, expected an object with a numeric eval_accuracy"
    return summary, None


def run_info(run_dir: Path) -> dict:
    """One row of the runs table. A run whose status.json or run.yaml cannot be trusted is
    `unreadable`, and `problem` names the file and why (a damaged eval summary only hides its evals).
    A plain TRL run (core/trl_runs.py) has `read_only` set: why it cannot be stopped or resumed here."""
    if trl_runs.is_trl_run(run_dir):
        return trl_run_info(run_dir)
    status, status_bad = checked_status(run_dir)
    config = read_config(run_dir)
    config_bad = (
        "run.yaml is not a mapping of settings"
        if config_path(run_dir).exists() and not config
        else f"run.yaml has model_name {config['model_name']!r}, which is not text"
        if not isinstance(config.get("model_name", ""), str)
        else None
    )
    summary, summary_bad = _summary(run_dir)
    started, ended = status.get("started_at"), status.get("ended_at")
    state = "unreadable" if status_bad or config_bad else effective_state(status)
    end = ended or (time.time() if state in LIVE_STATES else None)
    return _row(
        run_dir,
        model=config.get("model_name"),
        state=state,
        step=status.get("global_step") or 0,
        num_train_steps=status.get("max_steps") or whole_number((config.get("train") or {}).get("num_train_steps")),
        reward=_last_metric(run_dir, "reward"),
        eval_before=summary.get("before", {}).get("eval_accuracy"),
        eval_after=summary.get("after", {}).get("eval_accuracy"),
        evals=summary,
        started=started,
        duration=(end - started) if started and end else None,
        error=status.get("error"),
        problem=status_bad or config_bad or summary_bad,
        phase=status.get("phase"),
        phase_done=status.get("phase_done"),
        phase_total=status.get("phase_total"),
    )


def _row(run_dir: Path, **values) -> dict:
    """A row of the runs table: every key, `values` over what is known of any folder."""
    return {
        "name": run_dir.name,
        "model": None,
        "state": "unreadable",
        "step": 0,
        "num_train_steps": None,
        "reward": None,
        "eval_before": None,
        "eval_after": None,
        "evals": {},
        "started": None,
        "duration": None,
        "error": None,
        "problem": None,
        "path": str(run_dir),
        "phase": None,
        "phase_done": None,
        "phase_total": None,
        **values,
    }


def trl_run_info(run_dir: Path) -> dict:
    """The runs table's row of a plain TRL run: what its files tell (no eval, no settings of ours); a
    folder that cannot be read is `unreadable`, with the reason, never an error."""
    row = _row(run_dir, read_only=trl_runs.READ_ONLY)
    try:
        status = trl_runs.status(run_dir)
        rewards = [m["reward"] for m in trl_runs.metric_records(run_dir) or [] if "reward" in m]
        started, end = status["started_at"], status["ended_at"] or time.time()
        row.update(
            model=trl_runs.model_name(run_dir),
            state=status["state"],
            step=status["global_step"],
            num_train_steps=status["max_steps"],
            reward=rewards[-1] if rewards else None,
            started=started,
            duration=end - started if started else None,
        )
    except (OSError, ValueError, TypeError) as e:
        row["problem"] = f"a TRL run whose files cannot be read ({e})"
    return row


def list_runs(root: str | Path) -> list[dict]:
    """Every run under `root` (a folder with run.yaml or status.json, or a plain TRL run's), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        if not p.is_dir() or p.is_symlink():  # a symlink is not listed: it could lead anywhere
            continue
        if config_path(p).exists() or status_path(p).exists():
            runs.append(run_info(p))
        elif trl_runs.is_trl_run(p):  # asked once: it reads the folder's checkpoints and completions
            runs.append(trl_run_info(p))
    return sorted(runs, key=lambda r: r["started"] or 0, reverse=True)


@dataclass
class FormCheck:
    """What the Launch form's settings make: the --set items over its base config (the equivalent command
    line), the run's folder name (None: named from the settings when launched), and every problem at
    once, config key (or "run name", "launch from the dashboard") -> one line saying what is wrong."""

    sets: list[str]
    name: str | None
    problems: dict[str, str]


def reuse(run_dir: str | Path) -> float:
    """How many updates each batch of a run's samples trains (core.config.updates_per_batch): 1 for a
    TRL run, or a run.yaml that cannot be read."""
    try:
        return updates_per_batch(load_config(config_path(run_dir), check=False))
    except (ConfigError, OSError, ValueError):
        return 1


def taken(run_dir: Path) -> str | None:
    """Why no new run can go into `run_dir` (a run of that name is there already), or None: what the
    Launch form's Check says and what launch refuses, in one place."""
    return f"a run named '{run_dir.name}' already exists: choose another name" if run_dir.exists() else None


def check_form(
    base_path: str | Path, values: dict, texts: dict[str, str], name: str, root: str | Path | None = None
) -> FormCheck:
    """The Launch form's settings over the config at `base_path`: `values` by config key as the form's
    widgets give them, `texts` the keys typed as text (parsed as that key's type here), `name` the run
    name typed (a problem where a run under `root` has it already). A setting that does not parse keeps
    the base's value while the others are checked; what a web form may not launch (config.web_form_problem)
    is a problem too."""
    base, problems, values = load_config(base_path, check=False), {}, dict(values)
    for key, text in texts.items():
        try:
            values[key] = parse_setting(key, text)
        except (ConfigError, ValueError) as e:
            problems[key] = str(e)
            values.pop(key, None)  # the base's value meanwhile
    sets = changed_settings(base, values)
    cfg = load_config(base_path, check=False)
    for item in sets:
        key, _, text = item.partition("=")
        try:
            apply_setting(cfg, key, text_value(key, text))
        except (ConfigError, ValueError) as e:
            problems.setdefault(key, str(e))
    for key, message in config_problems(cfg):
        problems.setdefault(key, message)
    try:
        name = safe_run_name(name) if name.strip() else None
        if name and root is not None and (why := taken(run_path(root, name))):
            problems["run name"] = why
    except ValueError as e:  # no usable character, or a folder that leads outside the runs folder
        name, problems["run name"] = None, str(e)
    if web_form_problem(cfg):  # also settings the base itself carries
        problems.setdefault("launch from the dashboard", web_form_problem(cfg))
    return FormCheck(sets, name, problems)


def launch(config: dict, root: str | Path, name: str, repo: str | Path = ".") -> Path:
    """Start `python -m core.train` for `config` (a resolved config dict) as run `name`: its own
    process group, output to train.log. Returns the run directory; ValueError, and no folder left,
    for a name taken or a config a web form may not launch (config.web_form_problem)."""
    run_dir = run_path(root, name)
    if why := taken(run_dir):
        raise ValueError(why)
    run_dir.mkdir(parents=True)
    config = {**config, "train": {**config["train"], "output_dir": str(run_dir)}}
    config_path(run_dir).write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        problem = web_form_problem(load_config(config_path(run_dir), check=False))
    except ConfigError as e:
        problem = str(e)
    if problem:
        shutil.rmtree(run_dir)
        raise ValueError(problem)
    proc = _start(run_dir, ["--config", str(config_path(run_dir))], repo)
    if not status_path(run_dir).exists():  # the trainer overwrites this as soon as it starts
        write_json_atomic(
            status_path(run_dir),
            {
                "state": "starting",
                **process_identity(proc.pid),
                "started_at": time.time(),
                "global_step": 0,
                "max_steps": config["train"]["num_train_steps"],
            },
        )
    return run_dir


def resume(run_dir: str | Path, repo: str | Path = ".", num_train_steps: int | None = None) -> None:
    """Continue a run that is not live from its latest checkpoint (to `num_train_steps` steps,
    default its own target)."""
    run_dir = Path(run_dir)
    _ensure_not_live(run_dir, "")
    steps = num_train_steps or read_setting(read_config(run_dir), "train.num_train_steps", int)
    latest_checkpoint(run_dir, steps)  # fail here, with the reason, rather than in the subprocess
    old_pid = update_status(
        run_dir,
        state="starting",
        ended_at=None,
        exit_code=None,
        error=None,
        max_steps=steps,
        phase=None,
        phase_done=None,
        phase_total=None,
    ).get("pid")  # nothing of the last start
    proc = _start(run_dir, ["--resume", str(run_dir), "--set", f"train.num_train_steps={steps}"], repo)
    if read_status(run_dir).get("pid") == old_pid:  # unless the trainer already wrote its own
        update_status(run_dir, **process_identity(proc.pid))


def _start(run_dir: Path, args: list[str], repo: str | Path) -> subprocess.Popen:
    """`python -m core.train ARGS` in its own process group, output appended to train.log."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}  # run.yaml is the whole config
    env["SIMPLE_GRPO_LOGGED"] = "1"  # its output goes to train.log already
    with open(log_path(run_dir), "ab") as log:
        # SIGTERM is held (blocked) until core.train has its handler in place: a Stop right after Launch
        # then stops the run instead of killing a process that has not written its status yet
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.train", *args],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
        )
    # reaped when it ends, so that a finished run leaves no zombie process behind in the dashboard
    threading.Thread(target=proc.wait, name=f"reap {run_dir.name}", daemon=True).start()
    return proc


def stop(run_dir: str | Path) -> bool:
    """Ask a live run to stop: SIGTERM to its trainer (rank 0), which ends training at the next
    step boundary on every rank (core.lifecycle.any_rank). False if the run is not live."""
    status = read_status(run_dir)
    pid = run_process(status)
    if status.get("state") not in LIVE_STATES or pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def delete(run_dir: str | Path, root: str | Path) -> None:
    """Remove a run directory that is not live (exactly that folder of `root`)."""
    run_dir = run_folder(root, Path(run_dir).name)
    _ensure_not_live(run_dir, ": stop it first")
    shutil.rmtree(run_dir)


# A terminal's control sequences: a progress bar moves the cursor with them.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_tail(run_dir: str | Path, lines: int = 40) -> str:
    """The end of the run's train.log as a terminal shows it, a line still being written included: of a
    line that a progress bar wrote over and over (each state after a carriage return), its last state;
    no control sequences."""
    shown = []
    for line in last_lines(log_path(run_dir), 32768, partial=True):
        states = [state for state in CONTROL.sub("", line).split("\r") if state.strip()]
        shown.append(states[-1] if states else "")
    return "\n".join(shown[-lines:])


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
    flat = {name: _flatten(read_config(path)) for name, path in run_dirs.items()}
    keys = sorted({k for f in flat.values() for k in f} - {"train.output_dir"})

    def value(name, key):  # a run.yaml holds every key but the grpo: fields left at GRPOConfig's defaults
        if key in flat[name]:
            return flat[name][key]
        field = key.removeprefix("grpo.")
        return grpo_default(field) if key.startswith("grpo.") and field in grpo_field_types() else None

    rows = []
    for key in keys:
        values = {name: value(name, key) for name in run_dirs}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"key": key, **{name: "–" if v is None else str(v) for name, v in values.items()}})
    return rows


def save_preset(cfg: RunConfig, folder: str | Path, name: str, based_on: str) -> Path:
    """Write cfg as preset `<name>.yaml` in `folder` (without its run folder, so each run gets its own)
    and return its path; ConfigError if the name is unusable or taken."""
    try:
        path = Path(folder) / f"{safe_run_name(name)}.yaml"
    except ValueError as e:
        raise ConfigError(f"preset {e}") from None
    if path.exists():
        raise ConfigError(f"{path.parent.name}/{path.name} already exists: choose another preset name")
    data = cfg.to_dict()
    data["train"]["output_dir"] = None
    path.write_text(f"# Saved from the dashboard, based on {based_on}\n" + yaml.safe_dump(data, sort_keys=False))
    return path
