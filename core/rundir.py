"""The run directory: the one interface between the trainer and everything that reads a run (the
store, the runs list, the doctor, core.plots, core.evaluate, the pages). Every file of it is named
here, with the schema of its records; writers and readers take their paths from these functions.
docs/run-directory.md describes each file for a reader.

    <run>/run.yaml                          the fully resolved config                    config_path
    <run>/status.json                       the trainer's state (STATUS_TYPES)           status_path
    <run>/.lock                             held by the live trainer (flock)             lock_path
    <run>/metrics.jsonl                     a line per TRL log event                     metrics_path
    <run>/rollouts/rollouts.jsonl           a line per scored completion, rank 0         rollouts_path, rollout_files
    <run>/rollouts/rollouts.rank<R>.jsonl   ... of rank R (ROLLOUT_FIELDS)
    <run>/tokens/tokens.jsonl               each scored completion's sampled token ids   tokens_path, token_files
    <run>/tokens/tokens.rank<R>.jsonl       ... of rank R (TOKEN_FIELDS); the store never reads them
    <run>/updates/updates.jsonl             each update of a reused batch, per sample    updates_path, update_files
    <run>/updates/updates.rank<R>.jsonl     ... of rank R (UPDATE_FIELDS); only when a batch trains several updates
    <run>/eval/<phase>.jsonl                a line per eval question (EVAL_FIELDS)       eval_path, eval_files
    <run>/eval/summary.json                 each phase's summary                         eval_summary_path
    <run>/model/                            the final model and tokenizer                model_dir
    <run>/checkpoint-<step>/                what --resume continues from                 checkpoints
    <run>/train.log                         the run's output                             log_path
    <run>/tensorboard/                      TensorBoard's event files (report_to)        tensorboard_dir
    <run>/completions/                      TRL's completions_<step>.parquet (W&B, Trackio)
    <run>/.store/rollouts.duckdb            the dashboard's cache of the run's tables    store_cache_path

Runs written by earlier versions still read: MIGRATIONS lists, numbered and named, each change to a
file's records and the function that reads the old form as the new. (A rollout or metrics line
without `attempt`, from before runs were resumable, is attempt 0: the store's SQL reads a missing
one so, `coalesce(attempt, 0)`.)
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import yaml

from core.errors import ConfigError

CONFIG = "run.yaml"
STATUS = "status.json"
LOCK = ".lock"  # held (flock) by the run's trainer for its whole life: one writer per run directory
METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts"
TOKENS = "tokens"
UPDATES = "updates"
EVAL = "eval"
EVAL_SUMMARY = "summary.json"
MODEL = "model"
LOG = "train.log"
TENSORBOARD = "tensorboard"
REPLAYS = "replays"
STORE = ".store"  # the store's cache (core/store/cache.py): only readers write it, rebuilt from the files


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def status_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATUS


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def rollouts_path(run_dir: str | Path, rank: int = 0) -> Path:
    """Rank `rank`'s rollout file: each rank appends to its own."""
    name = "rollouts.jsonl" if rank == 0 else f"rollouts.rank{rank}.jsonl"
    return Path(run_dir) / ROLLOUTS / name


def rollout_files(run_dir: str | Path) -> list[Path]:
    """Every rank's rollout file, in order."""
    return sorted((Path(run_dir) / ROLLOUTS).glob("rollouts*.jsonl"))


def tokens_path(run_dir: str | Path, rank: int = 0) -> Path:
    """Rank `rank`'s file of sampled token ids, beside its rollout file."""
    name = "tokens.jsonl" if rank == 0 else f"tokens.rank{rank}.jsonl"
    return Path(run_dir) / TOKENS / name


def token_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / TOKENS).glob("tokens*.jsonl"))


def updates_path(run_dir: str | Path, rank: int = 0) -> Path:
    """Rank `rank`'s file of what each update of a reused batch did to its samples' tokens."""
    name = "updates.jsonl" if rank == 0 else f"updates.rank{rank}.jsonl"
    return Path(run_dir) / UPDATES / name


def update_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / UPDATES).glob("updates*.jsonl"))


def eval_path(run_dir: str | Path, phase: str) -> Path:
    return Path(run_dir) / EVAL / f"{phase}.jsonl"


def eval_files(run_dir: str | Path) -> list[Path]:
    """The eval files: before, after, and any `core.evaluate --phase`."""
    return sorted((Path(run_dir) / EVAL).glob("*.jsonl"))


def eval_summary_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVAL / EVAL_SUMMARY


def model_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / MODEL


def log_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOG


def tensorboard_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / TENSORBOARD


def replay_path(run_dir: str | Path, name: str) -> Path:
    """A saved reward replay's scores (core/replay.py): a JSON line per rollout."""
    return Path(run_dir) / REPLAYS / f"{name}.jsonl"


def replay_report_path(run_dir: str | Path, name: str) -> Path:
    """A saved reward replay's report: the rewards it scored with and what changed."""
    return Path(run_dir) / REPLAYS / f"{name}.json"


def replay_names(run_dir: str | Path) -> list[str]:
    """The names of the run's saved replays whose report is complete."""
    return sorted(p.stem for p in (Path(run_dir) / REPLAYS).glob("*.json"))


def store_cache_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STORE / "rollouts.duckdb"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint-<step>/ folders, oldest first."""
    found = [p for p in Path(run_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def run_outputs(run_dir: str | Path) -> list[str]:
    """What a run has written into `run_dir` (its rollouts, metrics, evals, checkpoints, model), by name:
    empty for a folder that only a launch has prepared (run.yaml, status.json, train.log)."""
    run_dir = Path(run_dir)
    found = [
        ROLLOUTS if rollout_files(run_dir) else None,
        METRICS if metrics_path(run_dir).exists() else None,
        EVAL if eval_files(run_dir) else None,
        *(p.name for p in checkpoints(run_dir)[-1:]),
        MODEL if model_dir(run_dir).exists() else None,
    ]
    return [name for name in found if name]


def latest_checkpoint(run_dir: str | Path, steps: int | None = None) -> Path:
    """The run's newest checkpoint-<step>/ folder; ConfigError when there is none to resume from, or when
    it is past `steps`, the step a resume is to train to (TRL would train nothing and call the run done)."""
    found = checkpoints(run_dir)
    if not (Path(run_dir) / "run.yaml").is_file() or not found:
        raise ConfigError(
            f"cannot resume '{run_dir}': it needs a run.yaml and a checkpoint-<step> folder "
            "(runs save one when stopped, and every train.save_steps steps)"
        )
    done = int(found[-1].name.split("-")[-1])
    if steps is not None and steps < done:
        raise ConfigError(
            f"cannot resume '{run_dir}' to step {steps}: its latest checkpoint is of step {done} already; train "
            f"until a later step (or step {done} itself, to end the run there with its eval after)"
        )
    return found[-1]


# ---- the records -------------------------------------------------------------------------------

STATES = ("starting", "running", "finished", "failed", "stopped")
NUMBER = (int, float)


def whole_number(value) -> int | None:
    """`value` when it is a whole number a step count can be (an int, not a bool, 0 to 2**62), else None."""
    return value if type(value) is int and 0 <= value < 2**62 else None


# status.json: field -> the types its value may have (docs/run-directory.md).
STATUS_TYPES = {
    "state": (str,),
    "pid": (int,),
    "pid_started": NUMBER,
    "pid_ticks": (int,),
    "started_at": NUMBER,
    "ended_at": NUMBER,
    "exit_code": (int,),
    "error": (str,),
    "global_step": (int,),
    "max_steps": (int,),
    "attempt": (int,),
    "phase": (str,),
    "phase_done": (int,),
    "phase_total": (int,),
}

# One rollout record, a JSON line per scored completion: field -> type (docs/run-directory.md).
# The store's columns and the tests' expectations are derived from it.
ROLLOUT_FIELDS = {
    "step": int,  # the training step it was sampled for (1 = the first, as TRL's metrics count)
    "prompt_id": str,  # stable short hash of the prompt text
    "prompt": str,
    "question": str,
    "completion": str,
    "prediction": str,  # the number after `Final:`, or null when malformed
    "ground_truth": str,
    "reward": float,  # the weighted total of `rewards`
    "rewards": dict[str, float],  # each reward function's value
    "correct": bool,
    "rank": int,  # the process that sampled it
    "sample": int,  # 0..K-1 within its group
    "completion_tokens": int,
    "time": float,
    "attempt": int,  # which start of the run wrote it (1, then 2 after a resume, ...)
}


def rollout_record(**fields) -> dict:
    """A rollout record: exactly ROLLOUT_FIELDS' keys, in their order (a field not given is null)."""
    unknown = fields.keys() - ROLLOUT_FIELDS.keys()
    if unknown:
        raise ValueError(f"not rollout fields: {', '.join(sorted(unknown))}")
    return {name: fields.get(name) for name in ROLLOUT_FIELDS}


# A line of tokens/: the token ids a completion was sampled as (what TRL scored, end of message
# included), keyed as its rollout record is. Kept apart from the rollouts: only the token view reads them.
TOKEN_FIELDS = {"step": int, "prompt_id": str, "sample": int, "attempt": int, "ids": list[int]}

# A line of updates/: one sample in one optimizer step of a run whose batch of samples trains several
# updates (core.config.updates_per_batch above 1; nothing is written otherwise, the ratio being 1).
UPDATE_FIELDS = {
    "step": int,  # the optimizer step this update is (TRL's metrics' step)
    "batch_step": int,  # the step the sample was generated for: its rollout record's `step`
    "prompt_id": str,
    "sample": int,
    "attempt": int,
    "advantage": float,  # TRL's, as the loss used it
    "ratios": list[float],  # each completion token's exp(logp - old): new over sampling-time probability
}

# One eval record, a JSON line per question of eval/<phase>.jsonl: field -> type.
EVAL_FIELDS = {
    "prompt_id": str,
    "question": str,
    "prompt": str,
    "ground_truth": str,
    "prediction": str,
    "completion": str,
    "correct": bool,
    "lenient_correct": bool,
    "completion_tokens": int,
}
EVAL_FIELDS_RENAMED = {"gt": "ground_truth", "pred": "prediction", "new_tokens": "completion_tokens"}


# ---- readers of older runs -----------------------------------------------------------------------


def m001_eval_fields_renamed(record: dict) -> dict:
    """Eval lines written before the eval record took the rollout record's names called ground_truth
    `gt`, prediction `pred` and completion_tokens `new_tokens`."""
    return {EVAL_FIELDS_RENAMED.get(k, k): v for k, v in record.items()}


MIGRATIONS = {  # number -> (the file it applies to, how its old records are read)
    1: ("eval/<phase>.jsonl", m001_eval_fields_renamed),
}


def read_eval_record(record: dict) -> dict:
    """An eval line as the current EVAL_FIELDS name it, whichever version wrote it."""
    for _, migrate in MIGRATIONS.values():
        record = migrate(record)
    return record


# ---- reading and writing a run's files --------------------------------------------------------


@contextmanager
def replaced(path: str | Path, mode: str = "w"):
    """Write `path` whole or not at all: into a temporary file beside it, renamed over it once the
    block ends without an error (a reader sees the old file or the new one, a new inode); the temporary
    file goes either way."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    with replaced(path) as f:
        f.write(json.dumps(data, indent=2))


def read_json(path: str | Path) -> dict | None:
    """A JSON file that should hold an object; None when it is missing, unreadable or something else."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: str | Path) -> dict:
    """The run's status.json as it is (checked_status says whether it can be trusted)."""
    return read_json(status_path(run_dir)) or {}


def checked_status(run_dir: str | Path) -> tuple[dict, str | None]:
    """(the run's status.json, or {} when it cannot be trusted; why not, in one line, or None when it
    is sound or absent), from one read of the file."""
    path = status_path(run_dir)
    if not path.exists():
        return {}, None
    status = read_json(path)
    if status is None:
        return {}, "status.json is not a JSON object"
    for name, value in status.items():
        kinds = STATUS_TYPES.get(name)
        if kinds and value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return {}, f"status.json has {name} {value!r}, which is not a {kinds[0].__name__}"
    if status.get("state") not in STATES:
        return {}, f"status.json has state {status.get('state')!r}, expected one of {', '.join(STATES)}"
    return status, None


def read_config(run_dir: Path) -> dict:
    """The run's run.yaml as a plain mapping; {} when it is missing, unreadable or not a mapping."""
    try:
        config = yaml.safe_load(config_path(run_dir).read_bytes())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_run_name(name: str) -> str:
    """A run name that is one plain folder name: letters, digits, '.', '_' and '-' only."""
    cleaned = NAME_RE.sub("_", name.strip()).strip("._-")[:120]
    if not cleaned:
        raise ValueError(f"name {name!r} has no usable characters: use letters, digits, '.', '_' or '-'")
    return cleaned
