"""Reward replay: score every logged completion of a run again with other rewards, without training.

    python -m core.replay RUN_DIR --reward NAME [--weight W] [--reward NAME ...] [--json] [--save NAME]

NAME is a built-in reward (core/rewards.py), `package.module:function` or `path/to/file.py:function`.
Each function is called with TRL's arguments, once per step (its rows grouped by prompt: TRL's own order
within a step, its sampler's shuffle, is not recorded): `prompts`, `completions`,
`completion_ids`, `trainer_state`, and the dataset columns TRL would pass (`question`, `answer_final`,
`prompt_id`, read from the rollouts). It reports how many samples change reward; per step, the mean
reward and the share of groups without a signal, before and after; the groups whose advantages change
sign; and the changed rows. Nothing is written unless `--save`: then `replays/<NAME>.jsonl` (the new
scores) and `replays/<NAME>.json` (this report) in the run folder. Exit 2 for bad input (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from core.advantage import advantages, run_settings
from core.config import read_setting
from core.errors import ConfigError
from core.rewards import called, resolve_reward
from core.rundir import (
    REPLAYS,
    read_config,
    replaced,
    replay_path,
    replay_report_path,
    safe_run_name,
    token_files,
    write_json_atomic,
)
from core.runstate import is_locked
from core.store import RunStore
from core.trl_runs import is_trl_run

BATCH_ROWS = 20_000  # rollouts held at a time (whole steps): memory follows this, not the run's size
CHANGED_KEPT = 1_000  # changed rows and sign-flipped groups kept for the report; every one is counted
SAME = 1e-9  # two rewards closer than this are the same reward
# The arguments TRL gives every reward function besides the dataset's columns (GRPOTrainer._calculate_rewards).
TRL_ARGUMENTS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"}


@dataclass
class Replay:
    rewards: list[dict]  # name and weight of each function replayed
    rollouts: int = 0
    changed: int = 0  # samples whose weighted reward changed
    groups: int = 0
    sign_flips: int = 0  # groups where an advantage went from above 0 to below it, or the other way
    steps: list[dict] = field(default_factory=list)  # per step: groups, mean and no-signal share before and after
    changed_rows: list[dict] = field(default_factory=list)  # the first CHANGED_KEPT, in step order
    flipped_groups: list[dict] = field(default_factory=list)  # the first CHANGED_KEPT: step, prompt_id
    seconds: float = 0.0
    reward_seconds: float = 0.0  # of those, inside the reward functions
    saved_as: str | None = None  # the name it was saved under (replays/<name>.*), made safe for a file

    @property
    def rollouts_per_second(self) -> float:
        return self.rollouts / self.seconds if self.seconds else 0.0


@dataclass
class TrainerState:
    """What TRL's `trainer_state` tells a reward that shapes by progress, at the step a batch was scored
    for: transformers' TrainerState fields of these names (its import alone takes seconds)."""

    global_step: int  # the optimizer steps done before the batch (its rollouts' step - 1)
    max_steps: int


class TokenIds(Sequence):
    """A step's completion ids, read from the run's tokens/ files the first time a reward looks at them:
    a reward that never does costs nothing."""

    def __init__(self, reader: TokenReader, keys: list[tuple]):
        self.reader, self.keys, self.ids = reader, keys, None

    def _all(self) -> list:
        if self.ids is None:
            self.ids = self.reader.ids(self.keys)
        return self.ids

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self.keys)


class TokenReader:
    """The run's sampled token ids (tokens/, core/rundir.py), loaded into DuckDB once, on first use: the
    latest attempt's ids of each (step, prompt, sample, rank)."""

    LOAD = """
CREATE TABLE ids AS SELECT step, prompt_id, sample, coalesce(try_cast(regexp_extract(filename, 'rank(\\d+)', 1) AS INT), 0) AS rank, ids
FROM read_json($paths, format = 'newline_delimited', filename = true, ignore_errors = true,
               columns = {step: 'BIGINT', prompt_id: 'VARCHAR', sample: 'BIGINT', attempt: 'BIGINT', ids: 'BIGINT[]'})
QUALIFY row_number() OVER (PARTITION BY step, prompt_id, sample, rank ORDER BY attempt DESC NULLS LAST) = 1
"""
    STEPS = "SELECT step, prompt_id, sample, rank, ids FROM ids WHERE step BETWEEN $first AND $last"

    def __init__(self, run_dir: Path):
        self.files = [str(p) for p in token_files(run_dir)]
        self.con = None

    def ids(self, keys: list[tuple]) -> list[list[int] | None]:
        """The ids of each (step, prompt_id, sample, rank) of `keys` (None where none was recorded)."""
        if self.con is None:
            self.con = duckdb.connect()
            self.con.execute(self.LOAD, {"paths": self.files})
        rows = self.con.execute(self.STEPS, {"first": min(k[0] for k in keys), "last": max(k[0] for k in keys)})
        found = {(s, p, k, r): ids for s, p, k, r, ids in rows.fetchall()}
        return [found.get((s, p, k, r or 0)) for s, p, k, r in keys]


def reward_specs(names: list[str], weights: list[float]) -> list[tuple[str, object, float]]:
    """(name, function, weight) for each reward named, with its weight (`weights` in the same order, or
    none: 1.0 each)."""
    if not names:
        raise ConfigError(
            "name a reward to replay with: --reward gsm8k_lenient (a built-in), --reward "
            "package.module:function or --reward path/to/file.py:function"
        )
    weights = weights or [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(
            f"{len(weights)} weight{'s' * (len(weights) != 1)} for {len(names)} reward{'s' * (len(names) != 1)}: "
            "give one for each, or none"
        )
    try:
        return [(name, resolve_reward(name), float(w)) for name, w in zip(names, weights)]
    except ValueError as e:
        raise ConfigError(str(e)) from None


def number(text: str) -> float:
    """A reward's weight as typed: a finite number; ValueError for anything else (nan, inf, words)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def weight(text: str) -> tuple[str, float]:
    """A --weight as given on the command line (argparse names this function when `text` is no number)."""
    return "weight", number(text)


def paired(given: list[tuple[str, object]]) -> tuple[list[str], list[float]]:
    """The --reward names and their weights from the command line's ("reward", name) and ("weight", w)
    in the order given: each --weight is the weight of the --reward before it, 1.0 where none follows."""
    names, weights = [], []
    for kind, value in given:
        if kind == "reward":
            names.append(value)
            weights.append(None)
        elif not names:
            raise ConfigError(f"--weight {value:g} comes before any --reward: give each weight after its reward")
        elif weights[-1] is not None:
            raise ConfigError(f"two --weight for --reward {names[-1]}: give each reward one weight, after it")
        else:
            weights[-1] = value
    return names, [1.0 if w is None else w for w in weights]


def columns_of(rows: list[dict], trl: bool) -> dict[str, list]:
    """The dataset columns TRL passes to a reward for these rows, as far as the rollouts record them: a
    plain TRL folder's completions table records none of this project's."""
    if trl:
        return {}
    return {
        "question": [r["question"] for r in rows],
        "answer_final": [r["ground_truth"] for r in rows],
        "prompt_id": [r["prompt_id"] for r in rows],
    }


def check_arguments(name: str, fn, available: set[str], trl: bool) -> None:
    """ConfigError when reward `name` names an argument this run cannot give it."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    for arg, p in parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or arg in available:
            continue
        if arg == "completion_ids" and p.default is not p.empty:  # it takes None (length_penalty: the text's length)
            continue
        what = "recorded no sampled token ids (tokens/)" if arg == "completion_ids" else f"has no column {arg!r}"
        has = ", ".join(sorted(available - TRL_ARGUMENTS)) or "none"
        raise ConfigError(
            f"reward {name!r} reads {arg}, and this run {what}: "
            + ("a plain TRL folder records only the prompts and completions" if trl else f"its columns are {has}")
        )


def score(name: str, fn, rows: list[dict], kwargs: dict) -> tuple[list[float | None], float]:
    """Reward `name`'s value for each row (core.rewards.called checks them), and the seconds it took."""
    began = time.perf_counter()
    values = called(name, fn, kwargs, lambda i: where(rows[i]), f"step {rows[0]['step']}")
    return values, time.perf_counter() - began


def where(row: dict) -> str:
    return f"step {row['step']}, prompt {row['prompt_id']}, sample {row['sample']}"


def weighted(values: list[list[float | None]], weights: list[float]) -> list[float | None]:
    """TRL's weighted sum of each sample's reward values (nansum; None where no function scored it)."""
    totals = []
    for sample in zip(*values):
        there = [w * v for w, v in zip(weights, sample) if v is not None]
        totals.append(sum(there) if there else None)
    return totals


def signs(values: list[float]) -> list[int]:
    return [0 if abs(v) < SAME else (1 if v > 0 else -1) for v in values]


def replay(store: RunStore, rewards: list[tuple[str, object, float]], config: dict, progress=None, save=None) -> Replay:
    """Score every rollout of `store`'s run with `rewards`; `config` is its run.yaml (the advantage's
    settings, the step count); `progress(done, total)` after each batch; `save(rows)` gets each batch's
    new scores."""
    started, trl = time.perf_counter(), bool(store.status.get("read_only"))
    settings = run_settings(config)
    max_steps = read_setting(config, "train.num_train_steps", int) or store.status.get("max_steps")
    report = Replay([{"name": name, "weight": w} for name, _, w in rewards])
    tokens = TokenReader(store.run_dir)
    available = TRL_ARGUMENTS | ({"question", "answer_final", "prompt_id"} if not trl else set())
    if not tokens.files:
        available -= {"completion_ids"}
    for name, fn, _ in rewards:
        check_arguments(name, fn, available, trl)
    total = store.count()
    for batch in store.rollout_batches(BATCH_ROWS):
        for step, rows in itertools.groupby(batch, key=lambda r: r["step"]):  # a batch comes in step order
            rows = list(rows)
            kwargs = {
                "prompts": [r["prompt"] for r in rows],
                "completions": [r["completion"] for r in rows],
                "completion_ids": TokenIds(tokens, [(r["step"], r["prompt_id"], r["sample"], r["rank"]) for r in rows])
                if tokens.files
                else None,
                "trainer_state": TrainerState(global_step=step - 1, max_steps=max_steps or 0),
                "log_extra": lambda column, values: None,
                "log_metric": lambda name, value: None,
                **columns_of(rows, trl),
            }
            values = []
            for name, fn, _ in rewards:
                scored, seconds = score(name, fn, rows, kwargs)
                values.append(scored)
                report.reward_seconds += seconds
            compare(report, rows, values, rewards, settings)
            if save is not None:
                save(
                    [
                        {
                            "step": r["step"],
                            "prompt_id": r["prompt_id"],
                            "sample": r["sample"],
                            "rank": r["rank"],
                            "reward": new,
                            "rewards": dict(zip((n for n, _, _ in rewards), each)),
                        }
                        for r, new, *each in zip(rows, weighted(values, [w for _, _, w in rewards]), *values)
                    ]
                )
        report.rollouts += len(batch)
        if progress:
            progress(report.rollouts, total)
    report.seconds = time.perf_counter() - started
    return report


def compare(report: Replay, rows: list[dict], values: list[list], rewards: list[tuple], settings: dict) -> None:
    """Add one step's rows (`rows`, every function's new `values`) to `report`: the changed samples, the
    step's means and groups without a signal, and the groups whose advantages change sign."""
    after = weighted(values, [w for _, _, w in rewards])
    for which, rewards_of, fix in (
        ("logged", [r["reward"] for r in rows], "the run's rollouts/ record rewards this large"),
        ("weighted", after, "give smaller weights, or rewards of a smaller size"),
    ):
        if not math.isfinite(sum(abs(v) for v in rewards_of if v is not None)):  # a step's mean would overflow
            raise ConfigError(
                f"the {which} rewards of step {rows[0]['step']} are too large to add up (a float overflows): {fix}"
            )
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["prompt_id"], []).append(i)
        before = row["reward"]
        if (before is None) != (after[i] is None) or before is not None and abs(before - after[i]) > SAME:
            report.changed += 1
            if len(report.changed_rows) < CHANGED_KEPT:
                report.changed_rows.append(
                    {
                        **{k: row[k] for k in ("step", "prompt_id", "sample", "rank", "completion")},
                        "before": before,
                        "after": after[i],
                    }
                )
    if settings["aggregation"] == "normalize_then_sum":  # each function normalised in its group first
        names = list(settings["weights"])
        logged = [dict(zip(r["names"] or [], r["values"] or [])) for r in rows]
        old = advantages(
            [[[logged[i].get(n) for n in names] for i in members] for members in groups.values()],
            list(settings["weights"].values()),
            aggregation="normalize_then_sum",
        )
        new = advantages(
            [[[v[i] for v in values] for i in members] for members in groups.values()],
            [w for _, _, w in rewards],
            aggregation="normalize_then_sum",
        )
    else:  # the weighted totals, normalised as the run's scale_rewards says
        old = advantages(
            [[[rows[i]["reward"]] for i in members] for members in groups.values()],
            scale_rewards=settings["scale_rewards"],
        )
        new = advantages(
            [[[after[i]] for i in members] for members in groups.values()], scale_rewards=settings["scale_rewards"]
        )
    flat_before = flat_after = 0
    for pid, members, a, b in zip(groups, groups.values(), old, new):
        # without a signal: its rewards all equal, a sample without one left out (the store's GROUP_SIGNAL)
        flat_before += len({rows[i]["reward"] for i in members} - {None}) == 1
        flat_after += len({after[i] for i in members} - {None}) == 1
        if any(x * y < 0 for x, y in zip(signs(a), signs(b))):
            report.sign_flips += 1
            if len(report.flipped_groups) < CHANGED_KEPT:
                report.flipped_groups.append({"step": rows[0]["step"], "prompt_id": pid})
    mean = lambda xs: sum(x for x in xs if x is not None) / max(1, sum(x is not None for x in xs))  # noqa: E731
    report.groups += len(groups)
    report.steps.append(
        {
            "step": rows[0]["step"],
            "groups": len(groups),
            "mean_before": mean([r["reward"] for r in rows]),
            "mean_after": mean(after),
            "no_signal_before": flat_before / len(groups),
            "no_signal_after": flat_after / len(groups),
        }
    )


def run_replay(
    run_dir: Path,
    rewards: list[tuple[str, object, float]],
    save_as: str | None = None,
    progress=None,
    store: RunStore | None = None,
) -> Replay:
    """Replay `rewards` on the run in `run_dir` (through `store` when one is open); with `save_as`, save the
    scores and the report in its replays/ folder, written whole or not at all."""
    if not run_dir.is_dir():
        raise ConfigError(f"no run folder at {run_dir}: give a run directory such as runs/<run>")
    if save_as is not None:
        try:
            save_as = safe_run_name(save_as)
        except ValueError as e:
            raise ConfigError(f"--save {e}") from None
        if is_trl_run(run_dir):
            raise ConfigError(
                f"{run_dir} is a plain TRL folder, which this project only reads: replay it without --save"
            )
        if is_locked(run_dir):
            raise ConfigError(
                f"{run_dir} is still training, and only its trainer writes there while it does: "
                "save the replay once the run has ended, or replay without --save"
            )
        if replay_path(run_dir, save_as).exists() or replay_report_path(run_dir, save_as).exists():
            raise ConfigError(
                f"a replay named {save_as!r} is saved already ({replay_path(run_dir, save_as)}): choose another "
                "name, or delete its two files first"
            )
    if store is None:  # in memory: a replay writes nothing into the run unless it is saved
        store = RunStore(run_dir, cached=False)
        store.refresh()
    if store.count() == 0:
        raise ConfigError(
            f"{run_dir} has no rollouts to replay (rollouts/*.jsonl, or a TRL run's "
            "completions/*.parquet written with log_completions=True)"
        )
    config = {} if is_trl_run(run_dir) else read_config(run_dir)
    if save_as is None:
        return replay(store, rewards, config, progress)
    path = replay_path(run_dir, save_as)

    def cannot_save(e: OSError) -> ConfigError:  # replays/ is a file, the run folder read-only, the disk full
        return ConfigError(f"could not save the replay in {path.parent} ({e.strerror or e}): replay without --save")

    def save(rows: list[dict]) -> None:
        try:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        except OSError as e:
            raise cannot_save(e) from None

    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as e:
        raise cannot_save(e) from None
    try:
        with replaced(path) as f:  # written whole or not at all
            report = replay(store, rewards, config, progress, save=save)
    except BaseException as e:
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty: a replay that failed leaves no folder behind
        if isinstance(e, OSError) and Path(e.filename or "").parent == path.parent:  # its file made or renamed
            raise cannot_save(e) from None
        raise
    report.saved_as = save_as
    write_json_atomic(replay_report_path(run_dir, save_as), as_json(report))
    return report


def as_json(report: Replay) -> dict:
    return {**asdict(report), "rollouts_per_second": round(report.rollouts_per_second, 1)}


def saved(run_dir: Path, name: str) -> dict | None:
    """A saved replay's report (replays/<name>.json), or None when it cannot be read."""
    try:
        return json.loads(replay_report_path(run_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def show(report: Replay, run_dir: Path) -> str:
    """The report as text, for the terminal."""
    with_ = ", ".join(f"{r['name']} × {r['weight']:g}" for r in report.rewards)
    lines = [
        f"{report.rollouts:,} rollouts of {run_dir} scored with {with_} in {report.seconds:.1f} s "
        f"({report.rollouts_per_second:,.0f} a second; {report.reward_seconds:.1f} s in the rewards)",
        f"changed: {report.changed:,} of {report.rollouts:,} ({report.changed / max(report.rollouts, 1):.1%})",
        f"groups whose advantages change sign: {report.sign_flips:,} of {report.groups:,}",
        "step | groups | mean reward before → after | groups without a signal before → after",
    ]
    shown = report.steps if len(report.steps) <= 20 else report.steps[:10] + report.steps[-10:]
    for i, s in enumerate(shown):
        if len(report.steps) > 20 and i == 10:
            lines.append(f"  ... {len(report.steps) - 20} steps more (--json gives every one)")
        lines.append(
            f"{s['step']} | {s['groups']} | {s['mean_before']:.3f} → {s['mean_after']:.3f} | "
            f"{s['no_signal_before']:.0%} → {s['no_signal_after']:.0%}"
        )
    for row in report.changed_rows[:10]:
        last = (row["completion"].strip().splitlines() or [""])[-1][:60]
        lines.append(
            f"changed: step {row['step']}, prompt {row['prompt_id']}, sample {row['sample']}: "
            f"{figure(row['before'])} → {figure(row['after'])}  ({last!r})"
        )
    return "\n".join(lines)


def figure(reward: float | None) -> str:
    return "none" if reward is None else f"{reward:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.replay", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder of this project's, or a plain TRL output folder")
    parser.add_argument(  # --reward and --weight in one list, in the order given: a weight is its reward's
        "--reward",
        dest="given",
        action="append",
        default=[],
        type=lambda name: ("reward", name),
        metavar="NAME",
        help="a built-in reward, package.module:function or path/to/file.py:function (repeatable)",
    )
    parser.add_argument(
        "--weight",
        dest="given",
        action="append",
        type=weight,
        metavar="W",
        help="the weight of the --reward before it (default 1.0)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--save", metavar="NAME", help=f"also save the scores and the report in {REPLAYS}/NAME.*")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # a user's module:function, from where the command runs
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what a reward prints goes to stderr: stdout is the report's
            rewards = reward_specs(*paired(args.given))
            report = run_replay(
                args.run_dir,
                rewards,
                args.save,
                progress=lambda done, total: print(f"replay: {done:,} of {total:,} rollouts", flush=True),
            )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report.saved_as:
        print(
            f"replay: saved as {report.saved_as!r}: {replay_path(args.run_dir, report.saved_as)} and its report",
            file=sys.stderr,
        )
    print(json.dumps(as_json(report), indent=2) if args.json else show(report, args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
