"""DuckDB over a run directory: incremental, exact ingestion and the queries the dashboard needs.

RunStore is four jobs, each in its own module: ingest.py (refresh: the run's files into tables),
search.py (the text search, its matches kept), queries.py (each named query beside its method),
groups.py (a step's groups with their advantages, the worked step).

    store = RunStore("runs/my_run")
    store.refresh()                       # ingest what was appended since the last refresh
    df, total = store.rollouts_page(step_min=10, search="Final: 42", limit=50)

Tables: `rollouts` (the rollout record, core.rundir.ROLLOUT_FIELDS, plus `file`: ingest.INSERT_ROLLOUTS,
and `degenerate`, decided when the run doctor asks: queries.DECIDE_DEGENERATE; for a plain TRL run,
TRL's `advantage`), `metrics` (long: step, time, name, value), `eval` (the eval record,
core.rundir.EVAL_FIELDS, plus `phase`). Each store holds its own in-memory DuckDB connection;
queries run on a cursor per call, so threads may share a store.

Exactly once: every file is followed by a core.tail.Tail, so a half-written last line waits for
the next refresh; a line that is not a JSON object with a prompt_id is skipped and counted in
`skipped`; a file that shrinks or is replaced (a run restarted under the same id) has its rows
dropped and read again; new files are picked up as they appear and a file that disappears takes
its rows with it. Every value in SQL is a bound parameter, file paths included.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import duckdb

from core.store.groups import Groups
from core.store.ingest import SCHEMA, Ingestion
from core.store.queries import Queries, compare_step_aggregates
from core.store.search import SEARCHES_KEPT, Search, caseless_regex
from core.tail import Tail

__all__ = ["RunStore", "SEARCHES_KEPT", "caseless_regex", "compare_step_aggregates"]


class RunStore(Ingestion, Search, Queries, Groups):
    """One run directory in DuckDB (its rollouts, metrics and evals), refreshed incrementally."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.con = duckdb.connect(config={"threads": os.cpu_count() or 2})
        # What runs on this connection (ingestion, the search's kept matches, the degenerate flags; queries
        # run on cursors, which keep DuckDB's default) need not keep the files' line order: every query
        # orders rows by what they are (step, rank, prompt, sample), and new rows still get higher row ids
        # than those before them. It saves much of a cold load (docs/measured.md, the store's profile).
        self.con.execute("SET SESSION preserve_insertion_order = false")
        self.con.execute(SCHEMA)
        self.skipped = 0  # lines of the run's files that were not a valid record
        self.unreadable: dict[str, str] = {}  # a plain TRL run's completion files that cannot be read: name -> why
        self.status: dict = {}
        self._tails: dict[Path, Tail] = {}
        self._file_ids: dict[str, int] = {}
        self._attempts: set[int] = set()  # the attempts (core.train starts) among the rollouts read
        self._trl_files: dict[Path, tuple] = {}  # a plain TRL run's completion files read: their size and time then
        self._trl_state = None  # ... and its trainer_state.json's path, size and time (core/trl_runs.py)
        self._searches: dict[str, tuple[str, int, bool]] = {}  # search's regex → tables, last rowid searched, misses?
        self._searches_made = 0
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="run-store-")

    def close(self) -> None:
        self.con.close()
        self._tmp.cleanup()
