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
generation batch of each logging step, so with logging_steps > 1 the steps between have no rollouts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.prompts import prompt_id
from core.rundir import checkpoints, config_path, status_path

COMPLETIONS = "completions"
TRAINER_STATE = "trainer_state.json"
NOT_REWARDS = ("step", "prompt", "completion", "advantage", "image", "images")  # TRL's other columns
LIVE_SECONDS = 120  # a TRL run with a file written this recently is taken to be running
READ_ONLY = ("a TRL run: this dashboard did not start it, so it does not stop, resume or delete it, and it has no "
             "settings of this project's to launch from")


def completion_files(folder: str | Path) -> list[Path]:
    """TRL's completions_<step>.parquet files, in step order."""
    return sorted(Path(folder, COMPLETIONS).glob("completions_*.parquet"))


def trainer_state_path(folder: str | Path) -> Path | None:
    """The newest trainer_state.json: the folder's own or its latest checkpoint's."""
    found = [p for p in [Path(folder) / TRAINER_STATE, *(c / TRAINER_STATE for c in checkpoints(folder))]
             if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def is_trl_run(folder: str | Path) -> bool:
    folder = Path(folder)
    if config_path(folder).exists() or status_path(folder).exists():
        return False
    return trainer_state_path(folder) is not None or bool(completion_files(folder))


def trainer_state(folder: str | Path) -> dict:
    """The newest trainer_state.json as a mapping; {} when there is none or it cannot be read."""
    path = trainer_state_path(folder)
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def metric_records(folder: str | Path) -> list[dict]:
    """log_history's entries as metrics.jsonl lines: step, time (unknown: None), attempt 0, the numbers."""
    history = trainer_state(folder).get("log_history")
    records = []
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            numbers = {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            records.append({**numbers, "step": entry["step"], "time": None, "attempt": 0})
    return records


def status(folder: str | Path) -> dict:
    """A status.json's fields, as far as the folder tells them: running while its files are being
    written, finished at its max_steps, stopped otherwise."""
    state = trainer_state(folder)
    files = completion_files(folder) + [p for p in [trainer_state_path(folder)] if p]
    last_write = max((p.stat().st_mtime for p in files), default=None)
    steps = [int(p.stem.rsplit("_", 1)[-1]) for p in completion_files(folder) if p.stem.rsplit("_", 1)[-1].isdigit()]
    step = max([state.get("global_step") or 0, *steps])
    max_steps = state.get("max_steps")
    done = isinstance(max_steps, int) and max_steps > 0 and step >= max_steps
    live = last_write is not None and time.time() - last_write < LIVE_SECONDS
    return {"state": "finished" if done else "running" if live else "stopped", "global_step": step,
            "max_steps": max_steps, "started_at": min((p.stat().st_mtime for p in files), default=None),
            "ended_at": None if live and not done else last_write, "read_only": READ_ONLY}


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
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def as_text(value) -> tuple[str, str]:
    """(the text, the question) of a prompt or completion: text as it is; a conversation as its
    messages, `role: content` each, and its last user message as the question."""
    if isinstance(value, str) or value is None:
        return value or "", value or ""
    messages = list(value)
    text = "\n\n".join(f"{m.get('role', '?')}: {_content(m)}" if isinstance(m, dict) else _content(m)
                       for m in messages)
    users = [_content(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return text, users[-1] if users else text


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else None


def rollout_records(path: str | Path) -> list[dict]:
    """One completions_<step>.parquet file's rows as rollout records (core.rundir.ROLLOUT_FIELDS), each
    with TRL's `advantage`. Raises OSError or ValueError for a file that cannot be read (yet)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's errors for a file still being written: ArrowInvalid and others
        raise ValueError(f"{path}: {e}") from None
    names = [n for n in table.column_names if n not in NOT_REWARDS and not n.startswith("__")]
    mtime = Path(path).stat().st_mtime
    seen: dict[tuple, int] = {}
    records = []
    for row in table.to_pylist():
        prompt, question = as_text(row.get("prompt"))
        completion, _ = as_text(row.get("completion"))
        rewards = {n: v for n in names if (v := _number(row.get(n))) is not None}
        step, pid = row.get("step"), prompt_id(prompt)
        sample = seen[(step, pid)] = seen.get((step, pid), -1) + 1
        records.append({
            "step": step if isinstance(step, int) else None, "prompt_id": pid, "prompt": prompt, "question": question,
            "completion": completion, "prediction": None, "ground_truth": None,
            "reward": sum(rewards.values()) if rewards else None, "rewards": rewards, "correct": None, "rank": None,
            "sample": sample, "completion_tokens": None, "time": mtime, "attempt": 0,
            "advantage": _number(row.get("advantage"))})
    return records
