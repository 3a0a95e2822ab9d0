"""What the pages share across reruns and sessions: the runs folder (and the TRL runs opened by path),
one store per run folder (kept for the life of the server), the run doctor's findings, looked at again
every DOCTOR_SECONDS, and the token view's models (two at most) and results (one per rollout and model)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import core.tokens
from core.config import default_runs_dir
from core.doctor import MIN_STEPS, diagnose
from core.rundir import read_config, rollout_files
from core.runs import list_runs, run_folder, run_info
from core.store import RunStore
from core.trl_runs import completion_files, is_trl_run


def runs_root() -> Path:
    root = default_runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


@st.cache_resource
def opened_folders() -> dict[str, Path]:
    """Plain TRL runs opened by path on the Runs page (name -> folder), for the life of the server:
    read-only folders outside the runs folder (core/trl_runs.py)."""
    return {}


def open_folder(text: str) -> str:
    """Add the TRL output folder at path `text` to the runs the pages list; returns the name it is
    listed under. ValueError (one line) for a path that is no TRL run."""
    folder = Path(text.strip()).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"no folder at {folder}: give the output_dir of a TRL GRPOTrainer run")
    if not is_trl_run(folder):
        raise ValueError(
            f"{folder} is not a TRL run's output folder: it needs a trainer_state.json (or a "
            "checkpoint-*/ with one) or completions/*.parquet, and no run.yaml (a run of this "
            "project's own opens from its runs folder)"
        )
    taken = {r["name"] for r in list_runs(runs_root())} | set(opened_folders())
    name = (
        folder.name
        if folder.name not in taken or opened_folders().get(folder.name) == folder
        else f"{folder.name}@{folder.parent.name}"
    )
    opened_folders()[name] = folder
    return name


def all_runs() -> list[dict]:
    """The runs under the runs folder, then the TRL runs opened by path, each as core.runs.run_info."""
    return list_runs(runs_root()) + [
        {**run_info(path), "name": name} for name, path in opened_folders().items() if path.is_dir()
    ]


def folder_of(name: str) -> Path:
    """The folder of run `name`: one opened by path, else that folder of the runs folder (ValueError
    for a name that is not one plain folder name)."""
    return opened_folders().get(name) or run_folder(runs_root(), name)


@st.cache_resource(max_entries=16, on_release=RunStore.close)
def _store(path: str, folder_id: tuple[int, int]) -> RunStore:
    return RunStore(path)


def store_for(name: str, rollouts: bool = True) -> RunStore:
    """The run's store: one per run folder for the life of the server, shared by sessions and
    refreshed incrementally (it reads a replaced file again by itself). A run deleted and made
    again is a new folder (another inode) and gets a new store; an evicted store is closed. Without
    `rollouts` only its metrics and evals are read (RunStore.refresh)."""
    path = folder_of(name)
    stat = path.stat()
    store = _store(str(path), (stat.st_dev, stat.st_ino))  # not st_ctime: each status.json write changes it
    store.refresh(rollouts)
    return store


RUNS_PAGE_READS_ROLLOUTS = 64 * 2**20  # rollout files this small are read for the Runs page's doctor: under a second


def small_rollouts(path: Path) -> bool:
    """Whether the run's rollout files (or a plain TRL run's completion files) are small enough for the
    Runs page to read at once."""
    return sum(p.stat().st_size for p in [*rollout_files(path), *completion_files(path)]) <= RUNS_PAGE_READS_ROLLOUTS


DOCTOR_SECONDS = 30  # how often the doctor looks again at a live run: it reads every rollout's figures


@st.cache_data(ttl=DOCTOR_SECONDS, max_entries=64, show_spinner=False)
def diagnosis(path: str, state: str, has_rollouts: bool, _store: RunStore, early_steps: int = MIN_STEPS) -> list:
    """The run doctor's findings (core.doctor), looked at again after DOCTOR_SECONDS: a live page
    refreshes every LIVE_SECONDS, and trends over many steps need no fresher look than that. A new
    state of the run, or its rollouts read at last, gets a new diagnosis at once; so does each step
    while the run has fewer than the doctor needs (`early_steps`: its steps so far, up to MIN_STEPS),
    whose finding counts them."""
    return diagnose(_store, read_config(Path(path)))


@st.cache_resource(max_entries=2, show_spinner=False)  # at most two models kept; an evicted one is freed
def token_model(model: str, fingerprint: tuple):
    """(model, tokenizer) of `model` for the token view (core.tokens.load); `fingerprint` tells a
    folder saved again apart from the one loaded."""
    return core.tokens.load(model)


@st.cache_data(max_entries=64, show_spinner=False)
def token_view(
    run_path: str,
    prompt_id: str,
    step: int,
    sample: int,
    attempt,
    completion: str,
    labels: tuple[str, str],
    models: tuple,
    _rollout: dict,
) -> core.tokens.TokenView:
    """The token view of one rollout (a resumed run's later attempt at a step is another rollout) between
    the run's two models `labels` (of core.tokens.model_choices), computed once for the `models`' fingerprints."""
    choices = core.tokens.model_choices(run_path)
    earlier, later = choices[labels[0]], choices[labels[1]]
    return core.tokens.token_view(
        run_path, _rollout, token_model(earlier, models[0]), token_model(later, models[1]), labels[1], labels[0]
    )
