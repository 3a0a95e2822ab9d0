"""The store's cache: a run's tables in a DuckDB file beside its files (core.rundir.store_cache_path), so
that a run larger than memory is served within MEMORY_LIMIT, and a store opened again (a restarted
dashboard, the doctor) reads only what was appended since. The run's JSON lines stay the truth: the
cache is rebuilt from them whenever it cannot be trusted.

What is kept beside the tables: each followed file's read position (`tails`: its path within the run,
its number in the rollouts' `file` column, offset, inode and first bytes: core.tail.Tail), the count of
skipped lines, the cache's version, and each table's size (rows, and its highest row id) as the
positions last saved found it. A refresh saves the positions and sizes in one commit at its end; a
store killed after writing rows and before that commit leaves tables whose size is not the one saved
(new rows always get higher row ids, so even an insert and a delete of as many rows show), and the
next open rebuilds the cache. So do a cache of another VERSION and one DuckDB cannot open (torn, or
from another DuckDB). A cache that cannot be used (another process has it open: DuckDB lets one
process write a file; this process has it open already; the run's folder is read-only; the disk is
full) gives way to a store in memory, and `note` says why in one line. Either way the memory DuckDB
uses is MEMORY_LIMIT: past it, a cached store works from its file and one in memory spills to a
temporary folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb

from core.rundir import rollout_files, store_cache_path
from core.store.ingest import SCHEMA
from core.tail import Tail

VERSION = "2"  # bump when the tables or what they mean change: a cache of another version is rebuilt
# A run whose rollout files are smaller is read into memory each time it is opened, unless it has a
# cache already: reading it costs a fraction of a second (about 0.35 s), less than what a cache adds
# to its first open and to each refresh of a live run (docs/measured.md, "The rollout store on disk").
CACHE_FROM_BYTES = 256 * 2**20
# The memory DuckDB may use for one store, whatever the run's size: past it, DuckDB works from the cache
# file or spills (docs/measured.md, "The rollout store on disk"). SIMPLE_GRPO_STORE_MEMORY sets it
# (DuckDB's form: 512MB, 2GB).
MEMORY_LIMIT = os.environ.get("SIMPLE_GRPO_STORE_MEMORY", "1GB")

META = """
CREATE TABLE IF NOT EXISTS meta (version VARCHAR, skipped BIGINT, sizes BIGINT[]);
CREATE TABLE IF NOT EXISTS tails (path VARCHAR, file INTEGER, "offset" BIGINT, inode BIGINT, head BLOB);
"""
READ_META = "SELECT version, skipped, sizes FROM meta"
NEW_META = "INSERT INTO meta VALUES ($version, 0, $sizes)"
SAVE_META = "UPDATE meta SET skipped = $skipped, sizes = $sizes"
# Each table's rows and highest row id (the rollouts': $rollouts_top, RunStore._top_rowid): what a refresh
# that did not finish leaves changed.
SIZES = """
SELECT [(SELECT count(*) FROM rollouts), $rollouts_top,
        (SELECT count(*) FROM metrics), (SELECT coalesce(max(rowid), -1) FROM metrics),
        (SELECT count(*) FROM eval), (SELECT coalesce(max(rowid), -1) FROM eval)]
"""
READ_TAILS = 'SELECT path, file, "offset", inode, head FROM tails'
SAVE_TAILS = ["DELETE FROM tails", "INSERT INTO tails SELECT * FROM new_tails"]
TAIL_SCHEMA = [("path", "string"), ("file", "int32"), ("offset", "int64"), ("inode", "int64"), ("head", "binary")]
TABLES = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"

# Cache files a store of this process has open, and its token: DuckDB would give a second store of the
# same file the same database, and both would ingest into it.
_open_here: dict[str, object] = {}


def worth_a_cache(run_dir: Path) -> bool:
    """Has the run a cache, or rollout files of CACHE_FROM_BYTES or more?"""
    if store_cache_path(run_dir).exists():
        return True
    return sum(p.stat().st_size for p in rollout_files(run_dir) if p.exists()) >= CACHE_FROM_BYTES


def connect(run_dir: Path, cached: bool, token: object, spill: str, unreadable: Exception | None = None):
    """(a connection, the cache file or None for a store in memory, a note on why it is in memory or was
    rebuilt). `token` stands for the store that holds the cache until `release`; `spill`: the folder where
    a store in memory puts what exceeds MEMORY_LIMIT; `unreadable`: what DuckDB said reading the cache
    file, which is then made anew."""
    con, path, note = _connect(run_dir, cached, token, spill, unreadable)
    # What runs on this connection (ingestion, the search's kept matches, the degenerate flags; queries
    # run on cursors, which keep DuckDB's default) need not keep the files' line order: every query
    # orders rows by what they are (step, rank, prompt, sample), and new rows still get higher row ids
    # than those before them. It saves much of a cold load (docs/measured.md, the store's profile).
    con.execute("SET SESSION preserve_insertion_order = false")
    return con, path, note


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:160] if str(error) else type(error).__name__


def _connect(run_dir: Path, cached: bool, token: object, spill: str, unreadable: Exception | None):
    config = {"threads": os.cpu_count() or 2, "memory_limit": MEMORY_LIMIT}
    path = store_cache_path(run_dir)

    def in_memory(why: str | None):
        return duckdb.connect(config={**config, "temp_directory": spill}), None, why and f"{why}: read into memory"

    if not cached:
        return in_memory(None)
    if str(path) in _open_here:
        return in_memory("this run's store is open already in this process")
    try:
        path.parent.mkdir(exist_ok=True)
        if unreadable is None:
            try:
                con = duckdb.connect(str(path), config=config)
                _open_here[str(path)] = token
                return con, path, None
            except duckdb.Error as e:
                if "lock" in str(e).lower():
                    return in_memory("another process has this run's store open")
                unreadable = e  # torn, or written by another DuckDB
        for stale in (path, path.with_name(path.name + ".wal")):
            stale.unlink(missing_ok=True)
        con = duckdb.connect(str(path), config=config)
    except (OSError, duckdb.Error) as e:  # a read-only folder, a full disk
        return in_memory(f"no cache for this run ({_first_line(e)})")
    _open_here[str(path)] = token
    return con, path, f"the store's cache could not be read ({_first_line(unreadable)}): rebuilt"


def release(path: Path | None, token: object) -> None:
    """The store that `token` stands for has let go of cache file `path` (closed, or garbage)."""
    if path is not None and _open_here.get(str(path)) is token:
        del _open_here[str(path)]


class Cache:
    """RunStore's cache: what it restores when opened, and the commit that keeps it trustworthy."""

    def _restore(self) -> None:
        """Take up where the cache left off, or empty it when it cannot be trusted."""
        self.skipped = 0  # lines of the run's files that were not a valid record
        self._tails: dict[Path, Tail] = {}
        self._file_ids: dict[str, int] = {}
        self._attempts: set[int] = set()  # the attempts (core.train starts) among the rollouts read
        self._searches: dict[str, tuple[str, int, bool]] = {}  # search's regex → tables, last rowid searched, misses?
        self._searches_made = 0
        self._top = -1  # the rollouts' highest row id as last found (Ingestion._top_rowid)
        self.con.execute(META)
        self.con.execute(SCHEMA)
        meta = self.con.execute(READ_META).fetchone()  # (version, skipped, sizes), or None: a new cache
        why = None
        if meta and meta[0] != VERSION:
            why = f"it was written by version {meta[0]} of the store"
        elif meta and meta[2] != self._sizes():
            why = "a refresh did not finish (the process was stopped)"
        for (table,) in self.con.execute(TABLES).fetchall():  # names from DuckDB's own catalogue
            if why or table.startswith("search_"):  # a search's kept matches belong to the store that made them
                self.con.execute(f'DROP TABLE "{table}"')
        if why:
            self.con.execute(META)
            self.con.execute(SCHEMA)
            self.note = f"the store's cache was rebuilt: {why}"
            meta = None
        if meta is None:
            self.con.execute(NEW_META, {"version": VERSION, "sizes": self._sizes()})
        self.skipped = meta[1] if meta else 0
        for path, file, offset, inode, head in self.con.execute(READ_TAILS).fetchall():
            tail = Tail(self.run_dir / path)
            tail.offset, tail.inode, tail.head = offset, inode, bytes(head)
            self._tails[tail.path] = tail
            if file is not None:
                self._file_ids[str(tail.path)] = file
        self._attempts = {
            a for (a,) in self.con.execute("SELECT DISTINCT coalesce(attempt, 0) FROM rollouts").fetchall()
        }
        self._saved = self._state()

    def _sizes(self) -> list[int]:
        return self.con.execute(SIZES, {"rollouts_top": self._top_rowid()}).fetchone()[0]

    def _open(self) -> None:
        """_restore, on a cache file made anew where DuckDB opened it but cannot read it (torn)."""
        try:
            self._restore()
        except duckdb.Error as e:
            if self.cache is None:
                raise
            with contextlib.suppress(duckdb.Error):
                self.con.close()
            release(self.cache, self._token)
            self.con, self.cache, self.note = connect(self.run_dir, True, self._token, self._tmp.name, unreadable=e)
            self._restore()

    def _in_memory(self, error: Exception) -> None:
        """Leave a cache that failed with `error` (a full disk) for a store in memory, empty: the next
        refresh reads the run anew."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        release(self.cache, self._token)
        self.con, self.cache, _ = connect(self.run_dir, False, self._token, self._tmp.name)
        self.note = f"the store's cache failed ({_first_line(error)}): read into memory"
        self._restore()

    def _state(self) -> tuple:
        """What a save keeps besides the tables: the read positions (with the files' numbers) and the skipped count."""
        tails = tuple(
            (str(path.relative_to(self.run_dir)), self._file_ids.get(str(path)), t.offset, t.inode, t.head)
            for path, t in self._tails.items()
        )
        return tails, self.skipped

    def _save(self) -> None:
        """At the end of a refresh: the read positions, the skipped count and the tables' sizes, in one
        commit, when any changed."""
        state = self._state()
        if self.cache is None or state == self._saved:
            return
        import pyarrow as pa

        tails, skipped = state
        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in TAIL_SCHEMA])
        table = pa.Table.from_pylist([dict(zip(schema.names, tail)) for tail in tails], schema=schema)
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.register("new_tails", table)
            for sql in SAVE_TAILS:
                self.con.execute(sql)
            self.con.unregister("new_tails")
            self.con.execute(SAVE_META, {"skipped": skipped, "sizes": self._sizes()})
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
        self._saved = state
