"""A plain TRL run: the output folder of TRL's own GRPOTrainer (not core.train), read as this project's
records, so that the dashboard opens it, read-only, beside its own runs.

    <output_dir>/completions/completions_<step>.parquet   with log_completions=True: step, prompt,
                                                          completion, a column per reward function,
                                                          any extra columns, advantage
    <output_dir>/trainer_state.json                       log_history: every logged metric (written by
    <output_dir>/checkpoint-<N>/trainer_state.json        trainer.save_state() and at each checkpoint)

A folder with either, and neither run.yaml nor status.json, is a TRL run. Prompts and completions
are text or conversations (lists of messages, for chat datasets): a conversation reads as its
messages, the question as its last user message. A rollout's prompt id is the hash of its prompt
text, its group the prompt at a step, its sample its place in that group, its advantage TRL's own.

What TRL does not record reads as missing (None), never as 0: the ground truth, correctness and the
parsed answer, the rank, the completion's token count, the reward functions' weights (the reward is
the plain sum of the functions' values: TRL's default weights are all 1). TRL keeps only the latest
generation batch of each logging step, so with logging_steps > 1 the steps between have no rollouts;
and at a step where it evaluated, the file holds the evaluation's completions (eval_steps): not read.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from core.prompts import prompt_id
from core.rundir import checkpoints, config_path, status_path, whole_number

COMPLETIONS = "completions"
TRAINER_STATE = "trainer_state.json"
NOT_REWARDS = ("step", "prompt", "completion", "advantage", "image", "images")  # TRL's other columns
WRITING_SECONDS = 120  # a TRL run with a file written this recently (at least) is taken to be running
READ_ONLY = (
    "a TRL run: this dashboard did not start it, so it does not stop, resume or delete it, and it has no "
    "settings of this project's to launch from"
)


def completion_files(folder: str | Path) -> list[Path]:
    """TRL's completions_<step>.parquet files, in step order."""
    return sorted(Path(folder, COMPLETIONS).glob("completions_*.parquet"))


def file_step(path: Path) -> int | None:
    """The step in a completions_<step>.parquet file's name."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _mtime(path: Path) -> float | None:
    """When `path` was last written; None when it is gone (TRL deletes old checkpoints as it saves)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def trainer_state_path(folder: str | Path) -> Path | None:
    """The newest readable trainer_state.json, the folder's own or a checkpoint's (a copy cut mid-file
    gives way to the newest intact one); the newest of all when none can be read yet; None without one."""
    found = sorted(
        (
            (t, p)
            for p in [Path(folder) / TRAINER_STATE, *(c / TRAINER_STATE for c in checkpoints(folder))]
            if (t := _mtime(p)) is not None
        ),
        reverse=True,
    )
    readable = next((p for _, p in found if _read_state(p) is not None), None)
    return readable or (found[0][1] if found else None)


def is_run(folder: str | Path) -> bool:
    """Does `folder` hold a run the dashboard lists: this project's (run.yaml or status.json), or a plain
    TRL run's (is_trl_run)?"""
    return config_path(folder).exists() or status_path(folder).exists() or is_trl_run(folder)


def is_trl_run(folder: str | Path) -> bool:
    folder = Path(folder)
    if config_path(folder).exists() or status_path(folder).exists():
        return False
    return trainer_state_path(folder) is not None or bool(completion_files(folder))


def trainer_state(folder: str | Path) -> dict | None:
    """The newest readable trainer_state.json as a mapping: {} when there is none, None when none can be
    read (TRL rewrites it in place: a read may catch it half written)."""
    path = trainer_state_path(folder)
    return {} if path is None else _read_state(path)


def _read_state(path: Path) -> dict | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _parsed_state(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parsed_state(path: str, size: int, mtime_ns: int) -> dict | None:
    """trainer_state.json parsed once per version of it (size and time): the runs list and the store both read it."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("log_history", []), list) else None


def metric_records(folder: str | Path) -> list[dict] | None:
    """log_history's entries as metrics.jsonl lines: step, time (unknown: None), attempt 0, the numbers;
    None when trainer_state.json cannot be read just now."""
    state = trainer_state(folder)
    if state is None:
        return None
    records = []
    for entry in state.get("log_history", []):
        if isinstance(entry, dict) and whole_number(entry.get("step")) is not None:
            numbers = {k: float(v) for k, v in entry.items() if _number(v) is not None}
            records.append({**numbers, "step": entry["step"], "time": None, "attempt": 0})
    return records


def reward_names(folder: str | Path) -> list[str] | None:
    """The reward functions' names, from the `rewards/<name>/mean` metrics TRL logs; None where no
    metric tells them (then every numeric column of the completions table but step and advantage
    counts as one: a reward function's extra logged columns would count too)."""
    names = {
        key[len("rewards/") : -len("/mean")]
        for record in metric_records(folder) or []
        for key in record
        if key.startswith("rewards/") and key.endswith("/mean")
    }
    return sorted(names) or None


def eval_steps(folder: str | Path) -> set[int]:
    """The steps at which TRL logged an evaluation (eval_* metrics in log_history). Its log() at an
    evaluation writes the evaluation's completions to that step's completions file, over the training
    completions logged there a moment before: such a file holds no training rollouts."""
    return {r["step"] for r in metric_records(folder) or [] if any(k.startswith("eval_") for k in r)}


def status(folder: str | Path) -> dict:
    """A status.json's fields, as far as the folder tells them: finished at its max_steps; running
    while it writes (a file within WRITING_SECONDS, or within three of its usual gaps between completion
    files, of a slow run); stopped otherwise."""
    state, files, path = trainer_state(folder) or {}, completion_files(folder), trainer_state_path(folder)
    written = sorted(t for p in files if (t := _mtime(p)) is not None)
    times = sorted(written + [t for t in [_mtime(path) if path else None] if t is not None])
    steps = [n for p in files if (n := file_step(p)) is not None]
    step = max([whole_number(state.get("global_step")) or 0, *steps])
    max_steps = whole_number(state.get("max_steps")) or None
    gaps = [b - a for a, b in zip(written, written[1:])]
    window = max(WRITING_SECONDS, 3 * statistics.median(gaps)) if gaps else WRITING_SECONDS
    done = max_steps is not None and step >= max_steps
    live = bool(times) and time.time() - times[-1] < window
    return {
        "state": "finished" if done else "running" if live else "stopped",
        "global_step": step,
        "max_steps": max_steps,
        "started_at": times[0] if times else None,
        "ended_at": None if live and not done else (times[-1] if times else None),
        "read_only": READ_ONLY,
    }


def model_name(folder: str | Path) -> str | None:
    """The model the run trained, from the config.json TRL saved (the folder's or its newest
    checkpoint's): its name where it kept one, else its architecture; None without one."""
    for path in [Path(folder) / "config.json", *(c / "config.json" for c in reversed(checkpoints(folder)))]:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            name = config.get("_name_or_path") or (config.get("architectures") or [None])[0]
        except (OSError, ValueError, AttributeError, TypeError, IndexError):
            continue
        if isinstance(name, str) and name:
            return name
    return None


def _content(message) -> str:
    """A message's text: its content, or the text parts of a multimodal content list."""
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def as_text(value, roles: bool = True) -> tuple[str, str]:
    """(the text, the question) of a prompt or completion: text as it is; a conversation (a list of
    messages, as pyarrow or pandas give it) as its messages, `role: content` each (or, without
    `roles`, their contents alone: a completion's one message), and its last user message as the question."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, bytes):  # a binary column: its text, an undecodable byte shown as �
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) or not isinstance(value, Iterable):  # text, or anything else as its text
        text = "" if value is None else str(value)
        return text, text
    messages = list(value)
    text = "\n\n".join(
        f"{m.get('role', '?')}: {_content(m)}" if roles and isinstance(m, dict) else _content(m) for m in messages
    )
    users = [_content(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return text, users[-1] if users else text


def _number(value) -> float | None:
    """`value` as a float when it is a number (not a boolean, not NaN), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


# Every completions file asked for, in one read (DuckDB reads many small files far faster than one at a
# time): the union of their columns by name, each row with the file it came from.
READ_COMPLETIONS = "SELECT * FROM read_parquet($paths, union_by_name = true, filename = 'source_file')"


def rollout_records(paths: list[Path], rewards: list[str] | None = None) -> tuple[dict[Path, list], dict[str, str]]:
    """Completions files' rows as rollout records (core.rundir.ROLLOUT_FIELDS), each with TRL's `advantage`,
    by file; `rewards` names the reward functions' columns (reward_names). A file that cannot be read
    (still being written, or damaged) is left out: the second mapping gives its name and why."""
    import duckdb

    if not paths:
        return {}, {}
    try:
        rows = duckdb.connect().sql(READ_COMPLETIONS, params={"paths": [str(p) for p in paths]}).to_arrow_table()
    except duckdb.Error as e:
        if len(paths) == 1:
            return {}, {paths[0].name: str(e).splitlines()[0][:200]}
        half = len(paths) // 2  # one file spoils a read of many: find which, reading halves
        (first, bad_first), (second, bad_second) = (
            rollout_records(part, rewards) for part in (paths[:half], paths[half:])
        )
        return {**first, **second}, {**bad_first, **bad_second}
    by_file: dict[str, list] = {}
    for row in rows.to_pylist():
        by_file.setdefault(row.pop("source_file"), []).append(row)
    names = [
        n
        for n in rows.column_names
        if n not in (*NOT_REWARDS, "source_file") and not n.startswith("__") and (rewards is None or n in rewards)
    ]
    return {Path(p): file_records(by_file.get(str(p), []), Path(p), names) for p in paths}, {}


def file_records(rows: list[dict], path: Path, names: list[str]) -> list[dict]:
    """One completions_<step>.parquet file's rows (`names`: its reward columns) as rollout records."""
    mtime, in_name = _mtime(path), file_step(path)
    seen: dict[tuple, int] = {}
    records = []
    for row in rows:
        prompt, question = as_text(row.get("prompt"))
        completion, _ = as_text(row.get("completion"), roles=False)
        rewards = {n: v for n in names if (v := _number(row.get(n))) is not None}
        step, pid = whole_number(row.get("step")) or in_name, prompt_id(prompt)
        sample = seen[(step, pid)] = seen.get((step, pid), -1) + 1
        records.append(
            {
                "step": step,
                "prompt_id": pid,
                "prompt": prompt,
                "question": question,
                "completion": completion,
                "prediction": None,
                "ground_truth": None,
                "reward": sum(rewards.values()) if rewards else None,
                "rewards": rewards,
                "correct": None,
                "rank": None,
                "sample": sample,
                "completion_tokens": None,
                "time": mtime,
                "attempt": 0,
                "advantage": _number(row.get("advantage")),
            }
        )
    return records
