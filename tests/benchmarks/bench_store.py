"""Benchmark the rollout store on a large run: cold and incremental refresh, the reopen of its cache,
every named query, peak memory; against DuckDB's own read_json, the store in memory (as before its
cache) and a naive pandas reload of the same files.

    python -m tests.benchmarks.bench_store [--rollouts 1000000] [--dir /tmp/simple_grpo_bench] [--cold-pairs 3]
        [--skip-pandas] [--skip-memory] [--skip-profile] [--compare]

`--compare` also opens a second run of the same size (the same files, hard-linked) beside the first in
one process, as the Compare page does, and gives that process's peak.

Each contender runs in its own process so peak resident memory is its own; the cold loads (a fresh
process and store, the files in the OS's cache) alternate (--cold-pairs). Then a cold load step by
step (read_json at DuckDB's defaults, without the line order, short values as JSON text, checked and
cast, the store's INSERT, the doctor's degenerate flags). Prints a table of measured figures; nothing
here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import time
from pathlib import Path

from tests.fake_run import write_run


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def files(run_dir: Path) -> list[str]:
    return sorted(str(p) for p in (run_dir / "rollouts").glob("rollouts*.jsonl"))


def typed_columns() -> str:
    """read_json's `columns`: each rollout field as its store column's type (values cast, unchecked)."""
    from core.store.ingest import ROLLOUT_COLUMNS

    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in ROLLOUT_COLUMNS.items()) + "}"


def duckdb_read_json(run_dir: Path, out) -> None:
    import duckdb

    con = duckdb.connect()
    start = time.perf_counter()
    con.execute(
        f"CREATE TABLE t AS SELECT * FROM read_json($f, format = 'newline_delimited', columns = {typed_columns()})",
        {"f": files(run_dir)},
    )
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    out.put({"seconds": time.perf_counter() - start, "rows": rows, "peak_mb": peak_mb()})


def pandas_reload(run_dir: Path, out) -> None:
    import pandas as pd

    start = time.perf_counter()
    frames = [pd.read_json(f, lines=True) for f in files(run_dir)]
    rows = sum(len(f) for f in frames)
    out.put({"seconds": time.perf_counter() - start, "rows": rows, "peak_mb": peak_mb()})


def median_ms(fn, repeats: int = 7, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def forget_cache(run_dir: Path) -> None:
    import shutil

    from core.rundir import store_cache_path

    shutil.rmtree(store_cache_path(run_dir).parent, ignore_errors=True)


def cache_mb(run_dir: Path) -> float:
    from core.rundir import store_cache_path

    return sum(p.stat().st_size for p in store_cache_path(run_dir).parent.iterdir()) / 2**20


def store_cold(run_dir: Path, out, cached: bool = True) -> None:
    """A first open: no cache yet (`cached`: the store writes one; else the store in memory)."""
    from core.store import RunStore

    forget_cache(run_dir)
    store = RunStore(run_dir, cached=cached)
    start = time.perf_counter()
    store.refresh()
    out.put({"seconds": time.perf_counter() - start, "peak_mb": peak_mb()})


def store_memory(run_dir: Path, out) -> None:
    store_cold(run_dir, out, cached=False)


def store_reopen(run_dir: Path, out) -> None:
    """A store opened again on the cache a cold load left (a restarted dashboard)."""
    from core.store import RunStore

    start = time.perf_counter()
    store = RunStore(run_dir)
    added = store.refresh()
    seconds = time.perf_counter() - start
    assert added == 0 and store.note is None, (added, store.note)
    out.put({"seconds": seconds, "rows": store.count(), "peak_mb": peak_mb()})


def two_stores(run_dir: Path, other: Path, out) -> None:
    """Two runs open in one process, each read cold and asked the Compare page's per-step figures."""
    from core.store import RunStore

    stores = []
    for path in (run_dir, other):
        forget_cache(path)
        stores.append(RunStore(path))
        stores[-1].refresh()
    for store in stores:
        store.step_aggregates()
        store.categories_per_step()
    out.put({"peak_mb": peak_mb(), "rows": [s.count() for s in stores]})


def store_run(run_dir: Path, total: int, out) -> None:
    from core.doctor import diagnose
    from core.store import RunStore, caseless_regex

    forget_cache(run_dir)
    store = RunStore(run_dir)
    rows = store.refresh()  # the cold loads are timed apart (store_cold), in alternation with read_json
    start = time.perf_counter()
    diagnose(store, {"max_new_tokens": 512})  # the run doctor's first look: its degenerate flags decided
    doctor = [time.perf_counter() - start]
    increments = []
    for i in range(9):  # a live run: 1,000 new rollouts land between two refreshes, the doctor looks after each
        write_run(run_dir, 1000, ranks=2, start=total + i * 1000)
        start = time.perf_counter()
        added = store.refresh()
        increments.append(time.perf_counter() - start)
        assert added == 1000, added
        start = time.perf_counter()
        diagnose(store, {"max_new_tokens": 512})
        doctor.append(time.perf_counter() - start)
    pid = store._query("SELECT prompt_id FROM rollouts LIMIT 1")["prompt_id"][0]
    step = int(store._query("SELECT max(step) AS s FROM rollouts")["s"][0])
    top = store.leaderboard("most_changed", limit=10)["prompt_id"].tolist()
    deep = store.rollouts_page(step_min=step // 2, step_max=step // 2, limit=1)[0]["key"].iloc[0]  # mid-run
    queries = {
        "rollouts page (no filter)": lambda: store.rollouts_page(),
        "rollouts page (step window, reward, correct, rank)": lambda: store.rollouts_page(
            step_min=step - 500, step_max=step, rewards=[1.0], correct=True, rank=1
        ),
        "rollouts page, text search (same again), last 100 steps": lambda: store.rollouts_page(
            search="final: 42", step_min=step - 100
        ),
        "rollouts page, text search (same again), last page": lambda: store.rollouts_page(
            search="final: 42", start="last"
        ),
        "rollouts page, the last page": lambda: store.rollouts_page(start="last"),
        "rollouts page, the page after one deep in the run": lambda: store.rollouts_page(start="after", key=deep),
        "rollouts page, sorted by length": lambda: store.rollouts_page(order="longest"),
        "reward histogram (step window)": lambda: store.reward_histogram(step - 1000, step),
        "reward categories per step": store.categories_per_step,
        "per-step aggregates": store.step_aggregates,
        "per-prompt accuracy (10 prompts)": lambda: store.prompt_accuracy(top),
        "leaderboard most improved (all steps)": lambda: store.leaderboard("most_improved"),
        "leaderboard never solved (last 500 steps)": lambda: store.leaderboard("never_solved", step - 500, step),
        "group view": lambda: store.group(pid, 0),
        "eval flips": store.eval_flips,
        "completion length by category": store.length_by_category,
        "metric series": lambda: store.metric_series(["loss", "reward"]),
    }
    searches, written = {}, [store.count()]  # a search asked for the first time, again, after new rollouts

    def arrive():  # a live run's step lands and is read
        write_run(run_dir, 1000, ranks=2, start=written[0])
        written[0] += 1000
        store.refresh()

    for text in ("final: 42", "Apples", "so the total", "answer"):

        def forget(text=text):  # as if never asked for
            if caseless_regex(text) in store._searches:
                store._forget_search(caseless_regex(text))

        searches[f"rollouts page, a new text search (`{text}`), all steps"] = median_ms(
            lambda text=text: store.rollouts_page(search=text), repeats=5, before=forget
        )
        searches[f"  `{text}` again (another page, order or filter)"] = median_ms(
            lambda text=text: store.rollouts_page(search=text, order="oldest")
        )
        searches[f"  `{text}` again, 1,000 new rollouts since"] = median_ms(
            lambda text=text: store.rollouts_page(search=text), repeats=5, before=arrive
        )
    doctor_ms = {
        "the run doctor's first look (diagnose: all it reads)": doctor[0] * 1000,
        "  again, 1,000 new rollouts since": statistics.median(doctor[1:]) * 1000,
    }
    out.put(
        {
            "rows": rows,
            "incremental_ms": statistics.median(increments) * 1000,
            "peak_mb": peak_mb(),
            "queries_ms": {**doctor_ms, **searches, **{name: median_ms(fn) for name, fn in queries.items()}},
        }
    )


def cold_steps(run_dir: Path, out, repeats: int = 3) -> None:
    """What each step of a cold load costs: each form of the read in a fresh in-memory DuckDB, in turn,
    `repeats` times, in one process; the medians, in seconds. Every form reads with `filename = true` as
    the store does, so its first row is not quite the cold pairs' read_json (which reads without it, in
    a process of its own): compare the rows with each other."""
    import duckdb

    from core.store.ingest import _READ_AS, INSERT_ROLLOUTS, READ_JSON, SCHEMA
    from core.store.queries import LAST_STEP, Queries

    typed = typed_columns()
    read = "FROM read_json($paths, format = 'newline_delimited', columns = {}, filename = true)"
    steps = {  # the SQL; whether it runs without keeping the files' line order (as RunStore's own connection)
        "read_json, typed, DuckDB's defaults (the baseline)": (
            f"CREATE TABLE t AS SELECT * {read.format(typed)}",
            False,
        ),
        "... the files' line order not kept": (f"CREATE TABLE t AS SELECT * {read.format(typed)}", True),
        "... short values read as JSON text, long ones as text": (
            f"CREATE TABLE t AS SELECT * {read.format(_READ_AS)}",
            True,
        ),
        "... each value checked against its field's JSON type and cast": (f"CREATE TABLE t AS {READ_JSON}", True),
        "... into the store's table, the prompt on sample 0 alone (the store)": (
            INSERT_ROLLOUTS.format(rows=READ_JSON),
            True,
        ),
        "then every rollout's degenerate flag (the doctor decides its steps')": (Queries.DECIDE_DEGENERATE, True),
    }
    insert = INSERT_ROLLOUTS.format(rows=READ_JSON)
    paths = files(run_dir)
    params = {"paths": paths, "file_ids": list(range(len(paths))), "first": 0, "last": LAST_STEP, "every": 1}
    times = {name: [] for name in steps}

    def bound(sql: str) -> dict:  # the parameters `sql` names
        return {k: v for k, v in params.items() if f"${k}" in sql}

    for _ in range(repeats):
        for name, (sql, unordered) in steps.items():
            con = duckdb.connect(config={"threads": os.cpu_count() or 2})
            if unordered:
                con.execute("SET SESSION preserve_insertion_order = false")
            con.execute(SCHEMA)
            if name.startswith("then"):  # on the rollouts the store read
                con.execute(insert, bound(insert))
            start = time.perf_counter()
            con.execute(sql, bound(sql))
            times[name].append(time.perf_counter() - start)
            con.close()
    out.put({name: statistics.median(t) for name, t in times.items()})


def in_process(target, *args) -> dict:
    out = mp.Queue()
    proc = mp.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/simple_grpo_bench"))
    parser.add_argument("--skip-pandas", action="store_true", help="the naive reload takes minutes at 1M")
    parser.add_argument("--skip-memory", action="store_true", help="no cold load of the store in memory")
    parser.add_argument("--compare", action="store_true", help="two runs of this size open in one process")
    parser.add_argument("--skip-profile", action="store_true", help="no step-by-step profile of a cold load")
    parser.add_argument(
        "--cold-pairs",
        type=int,
        default=3,
        help="cold loads of read_json and of the store, "
        "this many of each in alternating order; the table gives their medians",
    )
    args = parser.parse_args()
    if args.cold_pairs < 1:
        raise SystemExit(f"--cold-pairs {args.cold_pairs}: give at least 1")
    run_dir = args.dir / f"run_{args.rollouts}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # earlier runs appended increments: start from the same size each time
    print(f"writing {args.rollouts:,} rollouts (2 rank files) to {run_dir} ...", flush=True)
    write_run(run_dir, args.rollouts, ranks=2)
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "time": s, "loss": 1 / s, "reward": 0.1}) + "\n" for s in range(1, 2001))
    )
    size = sum(Path(f).stat().st_size for f in files(run_dir)) / 2**20
    print(f"{size:,.0f} MiB of JSON lines\n", flush=True)

    # The first read after the write pays for the write-back of what was just written (measured: read_json
    # 4.7-4.9 s first, 1.7-2.2 s after), so the files are synced and read once untimed, and the two
    # contenders then alternate, so that a drift in the machine's pace weighs on both alike. "Cold" is
    # a fresh process and store reading files the OS has cached, not a cold disk.
    os.sync()
    in_process(duckdb_read_json, run_dir)
    duck, cold = [], []
    for i in range(args.cold_pairs):
        for fn in (duckdb_read_json, store_cold) if i % 2 == 0 else (store_cold, duckdb_read_json):
            (duck if fn is duckdb_read_json else cold).append(in_process(fn, run_dir))
        print(
            f"cold pair {i}: read_json {duck[-1]['seconds']:.2f} s, RunStore {cold[-1]['seconds']:.2f} s, "
            f"{cold[-1]['seconds'] / duck[-1]['seconds']:.2f}x",
            flush=True,
        )
    ratios = [c["seconds"] / d["seconds"] for c, d in zip(cold, duck)]
    duck_s, cold_s = (statistics.median(r["seconds"] for r in rs) for rs in (duck, cold))
    reopen = [in_process(store_reopen, run_dir) for _ in range(3)]
    cache = cache_mb(run_dir)
    steps = {} if args.skip_profile else in_process(cold_steps, run_dir)
    store = in_process(store_run, run_dir, args.rollouts)
    rows = [
        (
            "DuckDB read_json into a table (baseline)",
            f"{duck_s:.2f} s median",
            f"{max(r['peak_mb'] for r in duck):,} MB",
        ),
        (
            "RunStore cold refresh()",
            f"{cold_s:.2f} s median ({statistics.median(ratios):.2f}x read_json, "
            f"pairs {min(ratios):.2f}-{max(ratios):.2f}x)",
            f"{store['peak_mb']:,} MB (whole run)",
        ),
        (
            "RunStore cold refresh(), the cold pairs' peak",
            f"its cache file {cache:,.0f} MiB",
            f"{max(r['peak_mb'] for r in cold):,} MB",
        ),
        (
            "RunStore reopened on its cache: open and refresh()",
            f"{statistics.median(r['seconds'] for r in reopen):.2f} s median of 3",
            f"{max(r['peak_mb'] for r in reopen):,} MB",
        ),
        ("RunStore incremental refresh(), 1,000 new", f"{store['incremental_ms']:.1f} ms median", ""),
    ]
    if not args.skip_memory:
        memory = in_process(store_memory, run_dir)
        rows.append(
            (
                "RunStore in memory, no cache (the store before it), cold",
                f"{memory['seconds']:.2f} s ({memory['seconds'] / duck_s:.2f}x read_json)",
                f"{memory['peak_mb']:,} MB",
            )
        )
    if args.compare:
        other = args.dir / f"run_{args.rollouts}_copy"
        if other.exists():
            import shutil

            shutil.rmtree(other)
        for f in [*files(run_dir), str(run_dir / "metrics.jsonl")]:
            target = other / Path(f).relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
        both = in_process(two_stores, run_dir, other)
        rows.append(
            (
                "two runs open in one process (Compare), each read cold",
                f"{both['rows']} rows",
                f"{both['peak_mb']:,} MB",
            )
        )
    if not args.skip_pandas:
        naive = in_process(pandas_reload, run_dir)
        rows.append(
            (
                "naive full reload: pandas.read_json(lines=True)",
                f"{naive['seconds']:.2f} s "
                f"({naive['seconds'] / cold_s:.1f}x cold refresh, "
                f"{naive['seconds'] * 1000 / store['incremental_ms']:,.0f}x incremental)",
                f"{naive['peak_mb']:,} MB",
            )
        )
    rows += [
        (
            f"cold load, step by step: {name}",
            f"{seconds:.2f} s median ({seconds / steps[next(iter(steps))]:.2f}x the first)",
            "",
        )
        for name, seconds in steps.items()
    ]
    rows += [(f"query: {name}", f"{ms:.1f} ms median", "") for name, ms in store["queries_ms"].items()]
    width, time_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'what':<{width}}  {'time':<{time_width}}  peak RSS")
    for what, t, mem in rows:
        print(f"{what:<{width}}  {t:<{time_width}}  {mem}")


if __name__ == "__main__":
    main()
