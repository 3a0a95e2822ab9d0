"""How a run's files get into the store: every rollout file's new lines in one checked DuckDB read (the
fast path), or line by line where a line does not fit (the exact path); metrics and evals as they
are appended. Each line once, a half-written last line left for the next refresh, a bad line skipped
and counted, a replaced or removed file's rows dropped (core/store/__init__.py says the whole contract).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from core.rundir import (
    EVAL,
    EVAL_FIELDS,
    ROLLOUT_FIELDS,
    ROLLOUTS,
    eval_files,
    metrics_path,
    read_eval_record,
    read_status,
    rollout_files,
)
from core.tail import Tail, parse_lines
from core.trl_runs import (
    completion_files,
    eval_steps,
    file_step,
    is_trl_run,
    metric_records,
    reward_names,
    rollout_records,
    trainer_state_path,
)
from core.trl_runs import status as trl_status

SQL_TYPES = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bool: "BOOLEAN", dict[str, float]: "MAP(VARCHAR, DOUBLE)"}
ROLLOUT_COLUMNS = {name: SQL_TYPES[tp] for name, tp in ROLLOUT_FIELDS.items()}
EVAL_COLUMNS = {name: SQL_TYPES[tp] for name, tp in EVAL_FIELDS.items()}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rollouts ({", ".join(f'"{k}" {v}' for k, v in ROLLOUT_COLUMNS.items())}, file INTEGER,
                       degenerate BOOLEAN, advantage DOUBLE);
CREATE TABLE IF NOT EXISTS metrics (step BIGINT, time DOUBLE, name VARCHAR, value DOUBLE, attempt BIGINT);
CREATE TABLE IF NOT EXISTS eval (phase VARCHAR, {", ".join(f'"{k}" {v}' for k, v in EVAL_COLUMNS.items())});
"""

# DuckDB's JSON reader (the fast path) casts what does not fit a column: `1.5` into a whole number
# becomes 2, `true` becomes 1, a list where text belongs becomes its JSON text, `{"x": "0.5"}` becomes a
# map to 0.5. So it reads each short value as its JSON text and keeps it only when that text is of the
# field's own JSON type; anything else raises, and the line-by-line path (_column_value) decides for that
# chunk. The tests are on the text itself, where json_type would parse each value a second time (a
# quarter of a cold load): JSON's own numbers start with a digit or '-' and a digit (not NaN, inf),
# whole ones have no '.', 'e' or 'E'; a string starts with '"', an object with '{', and in an object
# (written compact: `{"gsm8k":1.0}`) a number or null follows each `":`. The long texts are
# read as text (a second parse of them would cost half as much again as the whole read): one that could
# be the JSON text of a list, an object, a number or a boolean goes the exact way too (text with a space
# in it is none of those).
LONG_TEXT = ("prompt", "question", "completion")


def _number(text: str) -> str:
    """SQL: does JSON text `text` start as JSON's own numbers do (a digit, or '-' and a digit)?"""
    return f"({text} BETWEEN '0' AND ':' OR {text} BETWEEN '-0' AND '-:')"


def _checked(name: str, tp) -> str:
    """The SQL that turns JSON column `name` into its field's value, or raises when it does not fit."""
    fail = f"error('{name} is not a {ROLLOUT_COLUMNS[name]}')"
    if name in LONG_TEXT:
        return (
            f"CASE WHEN {name} IS NULL THEN NULL WHEN starts_with({name}, '[') OR starts_with({name}, '{{') THEN {fail} "
            f"WHEN contains({name}, ' ') THEN {name} "
            f"WHEN {name} IN ('true', 'false') OR try_cast({name} AS DOUBLE) IS NOT NULL THEN {fail} ELSE {name} END"
        )
    text = f"{name}::VARCHAR"
    odd, value = {
        int: (
            f"NOT {_number(text)} OR contains({text}, '.') OR contains({text}, 'e') OR contains({text}, 'E')",
            f"{text}::BIGINT",
        ),
        float: (f"NOT {_number(text)}", f"{text}::DOUBLE"),
        bool: (f"{text} NOT IN ('true', 'false')", f"{text} = 'true'"),
        str: (f"NOT starts_with({text}, '\"')", f"{name} ->> '$'"),
        dict[str, float]: (
            f"NOT starts_with({text}, '{{') OR regexp_matches({text}, '\":([^-0-9n]|-[^0-9]|n[^u])')",
            f"{name}::{ROLLOUT_COLUMNS[name]}",
        ),
    }[tp]
    return f"CASE WHEN {name} IS NULL THEN NULL WHEN {odd} THEN {fail} ELSE {value} END"


_READ_AS = "{" + ", ".join(f"'{k}': '{'VARCHAR' if k in LONG_TEXT else 'JSON'}'" for k in ROLLOUT_FIELDS) + "}"
# One query reads the new lines of every rollout file at once ($paths: the whole files, or copies of
# their new lines); `file` is the number of the file each line came from ($file_ids, in $paths' order).
READ_JSON = f"""
SELECT {", ".join(f'{_checked(k, tp)} AS "{k}"' for k, tp in ROLLOUT_FIELDS.items())},
       $file_ids[list_position($paths, filename)] AS file
FROM read_json($paths, format = 'newline_delimited', columns = {_READ_AS}, filename = true)
"""
# How rollout records (from READ_JSON, or `new_rows` decoded line by line) become rows. The prompt
# text (hundreds of characters, the same for all K samples of a group) is kept on sample 0 only: a
# third less memory for a large run; PROMPT_TEXT looks it up. `file` numbers the file the row came
# from (RunStore._file_id); `degenerate` is left for the run doctor to decide (Queries.DECIDE_DEGENERATE);
# `advantage` is TRL's own, given only for a plain TRL run (core/trl_runs.py: this project's runs
# compute it, core/advantage.py).
INSERT_ROLLOUTS = """
INSERT INTO rollouts BY NAME SELECT * REPLACE (CASE WHEN sample = 0 THEN prompt END AS prompt) FROM ({rows})
"""
# Among the rows just read, those that are not a rollout: no prompt_id or no step, the two that key one.
DROP_UNKEYED = "DELETE FROM rollouts WHERE rowid > $after AND (prompt_id IS NULL OR step IS NULL)"
NEW_ATTEMPTS = "SELECT DISTINCT coalesce(attempt, 0) AS a FROM rollouts WHERE rowid > $after"
DROP_FILE = "DELETE FROM rollouts WHERE file = $file"
DROP_FILES = "DELETE FROM rollouts WHERE list_contains($files, file)"
DROP_METRICS = "DELETE FROM metrics"
DROP_PHASE = "DELETE FROM eval WHERE phase = $phase"
# The rollouts' highest row id (new rows get higher ones), read from $at_least on: NULL when no row's is
# that high. Ingestion._top_rowid says why from there.
TOP_ROWID = "SELECT max(rowid) FROM rollouts WHERE rowid >= $at_least"
# A run started again (--resume after a crash) scores its first steps again: of each step, only the
# latest attempt counts. Rows of an earlier attempt at or after a later attempt's first step go.
DROP_SUPERSEDED = {
    table: f"""
DELETE FROM {table} WHERE EXISTS (
    SELECT 1 FROM (SELECT coalesce(attempt, 0) AS a, min(step) AS first FROM {table} GROUP BY 1) later
    WHERE later.a > coalesce({table}.attempt, 0) AND {table}.step >= later.first)
"""
    for table in ("rollouts", "metrics")
}


def _column_value(value, tp):
    """`value` as a column of field type `tp` holds it, only if it is of that field's own JSON type, as
    on the fast path (READ_JSON): text is never read as a number or a boolean ("false" is no boolean).
    ValueError when it does not fit, so that the line is skipped and counted."""
    if value is None:
        return None
    if tp is bool and isinstance(value, bool) or tp is str and isinstance(value, str):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp == dict[str, float] and isinstance(value, dict):
        return {str(k): _column_value(v, float) for k, v in value.items()}
    raise ValueError(f"{value!r} is not a {tp}")


class Ingestion:
    """RunStore's ingestion: `refresh()` and what it uses. `self.con` is the store's DuckDB connection."""

    def refresh(self, rollouts: bool = True) -> int:
        """Ingest what was appended since the last refresh; return the number of new rollouts. Without
        `rollouts`, only the small files (metrics, evals, status): what the Runs page shows, at once,
        however large the run (the rollouts are read when a page first needs them). A cache that fails
        to take the rows (a full disk) gives way to a store in memory, which reads the run anew."""
        with self._lock:
            try:
                return self._refresh(rollouts)
            except duckdb.Error as e:
                if self.cache is None:
                    raise
                self._in_memory(e)
        return self.refresh(rollouts)

    def _refresh(self, rollouts: bool) -> int:
        if is_trl_run(self.run_dir):
            return self._refresh_trl(rollouts)
        before, after = self.count(), self._top_rowid()
        followed = [path for path in self._tails if path.parent.name == ROLLOUTS]
        rollouts_now = rollout_files(self.run_dir) if rollouts else followed
        evals = eval_files(self.run_dir)  # before, after, any `core.evaluate --phase`
        metrics = metrics_path(self.run_dir)
        for path in set(self._tails) - {*rollouts_now, *evals, metrics}:  # files that went away
            self._drop(path)
            del self._tails[path]
        if rollouts and self._refresh_rollouts(rollouts_now):  # the new rows: rowid > after (never reused)
            self._drop_unkeyed(after)
            self._attempts |= {a for (a,) in self.con.execute(NEW_ATTEMPTS, {"after": after}).fetchall()}
            if len(self._attempts) > 1:  # a run started again: only then can rows be superseded
                self.con.execute(DROP_SUPERSEDED["rollouts"])
        for path in [*evals, metrics]:
            self._refresh_records(path)
        self._save()
        self.status = read_status(self.run_dir) or self.status  # {} if it went missing
        return self.count() - before

    def _top_rowid(self) -> int:
        """The rollouts' highest row id, -1 with none. Read from the highest this store last found on (the
        rows read since, not all: a scan of every row id takes milliseconds at millions of rows), and from
        the first row only when no row's is that high now (the top rows deleted). With the lock held, as by
        refresh and a search."""
        top = self.con.execute(TOP_ROWID, {"at_least": self._top}).fetchall()[0][0]  # all: the connection is free
        if top is None and self._top > 0:
            top = self.con.execute(TOP_ROWID, {"at_least": 0}).fetchall()[0][0]
        self._top = -1 if top is None else top
        return self._top

    def _tail(self, path: Path) -> Tail:
        return self._tails.setdefault(path, Tail(path))

    def _drop(self, path: Path) -> None:
        """Forget the rows read from `path`."""
        if path.parent.name == ROLLOUTS:
            self.con.execute(DROP_FILE, {"file": self._file_id(str(path))})
        elif path.parent.name == EVAL:
            self.con.execute(DROP_PHASE, {"phase": path.stem})
        else:
            self.con.execute(DROP_METRICS)

    def _refresh_rollouts(self, paths: list[Path]) -> int:
        """Ingest the complete lines appended to the rollout files `paths`: all of them in one read
        where every line is well formed, else file by file, and line by line for a file with a bad line.
        Returns the rows added."""
        with contextlib.ExitStack() as files:  # each file stays open: its lines are read from what the tail saw
            reads = []  # (file, what DuckDB reads: the file itself or a copy of its new lines, the file's size then, it open)
            for path in paths:
                try:
                    f = files.enter_context(open(path, "rb"))
                except FileNotFoundError:
                    continue
                replaced, start, end = self._tail(path).advance(f)
                if replaced:
                    self._drop(path)
                if end > start:
                    whole = start == 0 and os.fstat(f.fileno()).st_size == end
                    reads.append((str(path), str(path) if whole else self._copy(f, start, end, str(path)), end, f))
            added = self._read_json(reads) if reads else 0
            if added is None:
                added = 0
                for key, source, end, f in reads:
                    if source == key:  # a file read whole: copy just the lines it had
                        source = self._copy(f, 0, end, key)
                    one = self._read_json([(key, source, end, f)])  # a bad line: go line by line to skip just that one
                    added += self._ingest_lines(Path(source).read_bytes(), key) if one is None else one
            return added

    def _copy(self, f, start: int, end: int, key: str) -> str:
        """Copy bytes [start, end) of open file `f` (named `key`) to a file of its own: DuckDB reads whole
        files. Stops short if the file was cut meanwhile (its cut lines come back when it is read again)."""
        chunk = Path(self._tmp.name) / f"chunk{self._file_id(key)}.jsonl"
        with open(chunk, "wb") as out:
            f.seek(start)
            remaining = end - start
            while remaining and (data := f.read(min(remaining, 1 << 24))):
                out.write(data)
                remaining -= len(data)
        return str(chunk)

    def _read_json(self, reads: list[tuple]) -> int | None:
        """The fast path: DuckDB reads every (file, source, size, open file) in one statement. Returns
        the rows added, or None when nothing was kept: a line did not fit, or a file read whole changed
        meanwhile (it may have read a line twice over)."""
        params = {"paths": [read[1] for read in reads], "file_ids": [self._file_id(read[0]) for read in reads]}
        whole = [(f, end) for key, source, end, f in reads if source == key]
        if not whole:  # copies cannot change under DuckDB, and one statement is all or nothing
            try:
                return self.con.execute(INSERT_ROLLOUTS.format(rows=READ_JSON), params).fetchall()[0][0]
            except duckdb.Error:
                return None
        self.con.execute("BEGIN TRANSACTION")
        try:
            added = self.con.execute(INSERT_ROLLOUTS.format(rows=READ_JSON), params).fetchall()[0][0]
            if any(
                (now := os.stat(f.name)).st_size != end or now.st_ino != os.fstat(f.fileno()).st_ino for f, end in whole
            ):
                added = None
        except (duckdb.Error, OSError):  # a bad line, or the file went away
            added = None
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("ROLLBACK" if added is None else "COMMIT")
        return added

    def _drop_unkeyed(self, after: int) -> None:
        """A JSON line that is not a rollout (`null`, an object without a prompt_id or a step) counts as skipped."""
        self.skipped += self.con.execute(DROP_UNKEYED, {"after": after}).fetchone()[0]

    def _ingest_lines(self, data: bytes, key: str) -> int:
        """Slow, exact path: decode each line in Python, skip and count the bad ones; returns the rows added."""
        records, bad = parse_lines(data)
        self.skipped += bad
        rows = []
        for record in records:
            try:
                if record.get("prompt_id") is None or record.get("step") is None:
                    raise ValueError("not a rollout record")
                rows.append({name: _column_value(record.get(name), tp) for name, tp in ROLLOUT_FIELDS.items()})
            except ValueError:
                self.skipped += 1
        return self._insert_rollouts(rows, [self._file_id(key)] * len(rows))

    def _insert_rollouts(self, records: list[dict], files: list[int], advantage: bool = False) -> int:
        """Insert rollout records whose values fit their columns, each from the file numbered in `files`
        (RunStore._file_id; with TRL's `advantage` where `advantage` is set); returns the rows added."""
        types = {
            "BIGINT": pa.int64(),
            "DOUBLE": pa.float64(),
            "BOOLEAN": pa.bool_(),
            "VARCHAR": pa.string(),
            "MAP(VARCHAR, DOUBLE)": pa.map_(pa.string(), pa.float64()),
        }
        columns = {**ROLLOUT_COLUMNS, **({"advantage": "DOUBLE"} if advantage else {})}
        rows = {name: [r[name] for r in records] for name in columns}
        rows["file"] = files
        schema = pa.schema([*((k, types[v]) for k, v in columns.items()), ("file", pa.int32())])
        self.con.register("new_rows", pa.table(rows, schema=schema))
        added = self.con.execute(INSERT_ROLLOUTS.format(rows="SELECT * FROM new_rows")).fetchall()[0][0]
        self.con.unregister("new_rows")
        return added

    def _refresh_trl(self, rollouts: bool) -> int:
        """A plain TRL run (core/trl_runs.py): each completions parquet file once, and again when it is
        written anew (one still being written is read at the next refresh); the metrics of its newest
        trainer_state.json whenever that changes (one caught half written is read at the next refresh).
        Returns the number of new rollouts."""
        before = self.count()
        if rollouts:
            files, rewards, evaluated = (
                completion_files(self.run_dir),
                reward_names(self.run_dir),
                eval_steps(self.run_dir),
            )
            self.eval_files = sorted(p.name for p in files if file_step(p) in evaluated)  # not training's: not read
            files = [p for p in files if file_step(p) not in evaluated]
            for path in set(self._trl_files) - set(files):  # a file that went away takes its rows with it
                self.con.execute(DROP_FILE, {"file": self._file_id(str(path))})
                del self._trl_files[path]
            changed = {}  # path -> what it was when read: new files, files written anew, and the rewards they count
            for path in files:
                try:
                    stat = path.stat()
                except OSError:  # gone since it was listed
                    continue
                if self._trl_files.get(path) != (stat.st_size, stat.st_mtime_ns, rewards):
                    changed[path] = (stat.st_size, stat.st_mtime_ns, rewards)
            records, unreadable = rollout_records(list(changed), rewards)  # all of them in one read
            self.unreadable = {
                n: why for n, why in {**self.unreadable, **unreadable}.items() if n in {p.name for p in files}
            }
            if records:
                ids = [self._file_id(str(path)) for path in records]
                self.con.execute(DROP_FILES, {"files": ids})
                self._insert_rollouts(
                    [r for rows in records.values() for r in rows],
                    [i for i, rows in zip(ids, records.values()) for _ in rows],
                    advantage=True,
                )
                for path in records:  # read whole: said no more, read again only once it changes
                    self.unreadable.pop(path.name, None)
                    self._trl_files[path] = changed[path]
        state = trainer_state_path(self.run_dir)
        try:
            stat = state.stat() if state else None
            seen = (state, stat.st_size, stat.st_mtime_ns) if stat else None
        except OSError:  # an old checkpoint deleted just now
            seen = self._trl_state
        records = metric_records(self.run_dir) if seen != self._trl_state else None
        if records is not None:
            self.con.execute(DROP_METRICS)
            self._insert("metrics", [row for record in records for row in self._metric_rows(record)])
            self._trl_state = seen
        self.status = trl_status(self.run_dir)
        return self.count() - before

    def _file_id(self, path: str) -> int:
        """The number that stands for file `path` in the rollouts' `file` column (a path on every row
        would cost some 70 MB a million rows)."""
        if path not in self._file_ids:  # a number no file had: those of files gone may still be on rows
            self._file_ids[path] = max(self._file_ids.values(), default=-1) + 1
        return self._file_ids[path]

    def _insert(self, table: str, rows: list[dict]) -> None:
        """Append rows (dicts whose keys are `table`'s columns, in order) to metrics or eval."""
        if not rows:
            return
        self.con.register("new_rows", pa.Table.from_pylist(rows))
        self.con.execute(f"INSERT INTO {table} SELECT * FROM new_rows")  # table: one of our three names
        self.con.unregister("new_rows")

    def _refresh_records(self, path: Path) -> None:
        """New lines of metrics.jsonl (one row per numeric metric) or of an eval/<phase>.jsonl."""
        replaced, records, bad = self._tail(path).read_records()
        if replaced:
            self._drop(path)
        rows = []
        for record in records:
            try:
                rows += self._eval_rows(path.stem, record) if path.parent.name == EVAL else self._metric_rows(record)
            except ValueError:
                bad += 1
        self.skipped += bad
        self._insert("eval" if path.parent.name == EVAL else "metrics", rows)
        if rows and path.parent.name != EVAL:
            self.con.execute(DROP_SUPERSEDED["metrics"])

    @staticmethod
    def _metric_rows(record: dict) -> list[dict]:
        step, time_ = _column_value(record.get("step"), int), _column_value(record.get("time"), float)
        attempt = _column_value(record.get("attempt"), int)
        return [
            {"step": step, "time": time_, "name": k, "value": float(v), "attempt": attempt}
            for k, v in record.items()
            if k not in ("step", "time", "attempt") and isinstance(v, (int, float))
        ]

    @staticmethod
    def _eval_rows(phase: str, record: dict) -> list[dict]:
        record = read_eval_record(record)  # as an earlier version may have written it (core.rundir.MIGRATIONS)
        return [{"phase": phase, **{k: _column_value(record.get(k), tp) for k, tp in EVAL_FIELDS.items()}}]
