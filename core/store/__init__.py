"""DuckDB over a run directory: incremental, exact ingestion and the queries the dashboard needs.

RunStore is five jobs, each in its own module: ingest.py (refresh: the run's files into tables),
cache.py (the tables kept in a file beside the run, reopened where they left off), search.py (the text
search, its matches kept), queries.py (each named query beside its method), groups.py (a step's groups
with their advantages, the worked step).

    store = RunStore("runs/my_run")
    store.refresh()                       # ingest what was appended since the last refresh
    df, total = store.rollouts_page(step_min=10, search="Final: 42", limit=50)

Tables: `rollouts` (the rollout record, core.rundir.ROLLOUT_FIELDS, plus `file`: ingest.INSERT_ROLLOUTS,
and `degenerate`, decided for the steps the run doctor reads: queries.DECIDE_DEGENERATE; for a plain TRL run,
TRL's `advantage`), `metrics` (long: step, time, name, value), `eval` (the eval record,
core.rundir.EVAL_FIELDS, plus `phase`). Each store holds its own DuckDB connection, to the run's
cache file (cache.py) or, where there can be none, in memory; queries run on a cursor per call, so
threads may share a store.

Exactly once: every file is followed by a core.tail.Tail, so a half-written last line waits for
the next refresh; a line that is not a JSON object with a prompt_id and a step is skipped and counted in
`skipped`; a file that shrinks or is replaced (a run restarted under the same id) has its rows
dropped and read again; new files are picked up as they appear and a file that disappears takes
its rows with it. Every value in SQL is a bound parameter, file paths included.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from pathlib import Path

from core.store.cache import Cache, connect, release, worth_a_cache
from core.store.groups import Groups
from core.store.ingest import Ingestion
from core.store.queries import Queries, compare_step_aggregates
from core.store.search import SEARCHES_KEPT, Search, caseless_regex
from core.trl_runs import is_trl_run

__all__ = ["RunStore", "SEARCHES_KEPT", "caseless_regex", "compare_step_aggregates"]


class RunStore(Ingestion, Cache, Search, Queries, Groups):
    """One run directory in DuckDB (its rollouts, metrics and evals), refreshed incrementally."""

    def __init__(self, run_dir: str | Path, cached: bool | None = None):
        """`cached`: keep the tables in the run's cache file (cache.py; never for a plain TRL run, whose
        folder is TRL's); False: in memory; None: cached if the run is large enough to be worth it
        (cache.worth_a_cache) when opened."""
        self.run_dir = Path(run_dir)
        self._token = object()
        # copies of new lines for DuckDB to read, and what a store in memory spills past its memory limit
        self._tmp = tempfile.TemporaryDirectory(prefix="run-store-")
        if cached is None:
            cached = worth_a_cache(self.run_dir)
        cached = cached and not is_trl_run(self.run_dir)
        self.con, self.cache, self.note = connect(self.run_dir, cached, self._token, self._tmp.name)
        weakref.finalize(self, release, self.cache, self._token)  # a store never closed lets go when collected
        self.unreadable: dict[str, str] = {}  # a plain TRL run's completion files that cannot be read: name -> why
        self.eval_files: list[str] = []  # ... and those written at an evaluation step (trl_runs.eval_steps)
        self.status: dict = {}
        self._trl_files: dict[Path, tuple] = {}  # a plain TRL run's completion files read: their size and time then
        self._trl_state = None  # ... and its trainer_state.json's path, size and time (core/trl_runs.py)
        self._lock = threading.Lock()
        self._open()

    def close(self) -> None:
        self.con.close()
        release(self.cache, self._token)
        self._tmp.cleanup()
