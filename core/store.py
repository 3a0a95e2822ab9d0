"""DuckDB over a run directory: incremental, exact ingestion and the queries the dashboard needs.

    store = RunStore("runs/my_run")
    store.refresh()                       # ingest what was appended since the last refresh
    df, total = store.rollouts_page(step_min=10, search="Final: 42", limit=50)

Tables: `rollouts` (the rollout record, core.rollouts.ROLLOUT_FIELDS, plus `file` and `degenerate`:
INSERT_ROLLOUTS),
`metrics` (long: step, time, name, value), `eval` (the eval record,
core.evaluate.EVAL_FIELDS, plus `phase`). Each store holds its own in-memory DuckDB connection;
queries run on a cursor per call, so threads may share a store.

Exactly once: every file is followed by a core.tail.Tail, so a half-written last line waits for
the next refresh; a line that is not a JSON object with a prompt_id is skipped and counted in
`skipped`; a file that shrinks or is replaced (a run restarted under the same id) has its rows
dropped and read again; new files are picked up as they appear and a file that disappears takes
its rows with it. Every value in SQL is a bound parameter, file paths included.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

import duckdb

from core.advantage import advantages, run_settings
from core.evaluate import EVAL_FIELDS, EVAL_FIELDS_RENAMED
from core.rollouts import ROLLOUT_FIELDS
from core.runs import read_status
from core.tail import Tail, parse_lines

SQL_TYPES = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bool: "BOOLEAN", dict[str, float]: "MAP(VARCHAR, DOUBLE)"}
ROLLOUT_COLUMNS = {name: SQL_TYPES[tp] for name, tp in ROLLOUT_FIELDS.items()}
EVAL_COLUMNS = {name: SQL_TYPES[tp] for name, tp in EVAL_FIELDS.items()}

SCHEMA = f"""
CREATE TABLE rollouts ({", ".join(f'"{k}" {v}' for k, v in ROLLOUT_COLUMNS.items())}, file INTEGER,
                       degenerate BOOLEAN);
CREATE TABLE metrics (step BIGINT, time DOUBLE, name VARCHAR, value DOUBLE, attempt BIGINT);
CREATE TABLE eval (phase VARCHAR, {", ".join(f'"{k}" {v}' for k, v in EVAL_COLUMNS.items())});
"""

# DuckDB's JSON reader (the fast path) casts what does not fit a column: `1.5` into a whole number
# becomes 2, `true` becomes 1, a list where text belongs becomes its JSON text. So it reads each value
# as JSON and keeps it only when it is null or of its field's own JSON type; anything else raises, and
# the line-by-line path (_column_value) decides for that chunk. The long texts are read as text (a
# second parse of them would cost half as much again as the whole read): one that could be the JSON
# text of a list, an object, a number or a boolean goes the exact way too.
LONG_TEXT = ("prompt", "question", "completion")
JSON_TYPES = {int: ("BIGINT", "UBIGINT"), float: ("BIGINT", "UBIGINT", "DOUBLE"), bool: ("BOOLEAN",),
              str: ("VARCHAR",), dict[str, float]: ("OBJECT",)}


def _checked(name: str, tp) -> str:
    """The SQL that turns JSON column `name` into its field's value, or raises when it does not fit."""
    if name in LONG_TEXT:
        odd = f"left({name}, 1) IN ('[', '{{') OR try_cast({name} AS DOUBLE) IS NOT NULL OR {name} IN ('true', 'false')"
    else:
        odd = f"json_type({name}) NOT IN ({', '.join(repr(t) for t in JSON_TYPES[tp])})"
    value = name if name in LONG_TEXT else f"{name} ->> '$'" if tp is str else f"{name}::{ROLLOUT_COLUMNS[name]}"
    return f"CASE WHEN {name} IS NULL THEN NULL WHEN {odd} THEN error('{name} is not a {ROLLOUT_COLUMNS[name]}') ELSE {value} END"


_READ_AS = "{" + ", ".join(f"'{k}': '{'VARCHAR' if k in LONG_TEXT else 'JSON'}'" for k in ROLLOUT_FIELDS) + "}"
# One query reads the new lines of every rollout file at once ($paths: the whole files, or copies of
# their new lines); `file` is the number of the file each line came from ($file_ids, in $paths' order).
READ_JSON = f"""
SELECT {", ".join(f'{_checked(k, tp)} AS "{k}"' for k, tp in ROLLOUT_FIELDS.items())},
       $file_ids[list_position($paths, filename)] AS file
FROM read_json($paths, format = 'newline_delimited', columns = {_READ_AS}, filename = true)
"""
# A degenerate completion (what the run doctor looks for, core/doctor.py): a well-formed `Final:`
# line with nothing before it, or text that repeats itself (its first 24 characters come again later
# on: "so so so so ...", the same sentence over and over). Decided once per rollout, as it is read.
DEGENERATE = """(prediction IS NOT NULL AND starts_with(ltrim(completion), 'Final:')
    OR length(completion) >= 100 AND contains(substr(completion, 25), substr(completion, 1, 24)))"""
# How rollout records (from READ_JSON, or `new_rows` decoded line by line) become rows. The prompt
# text (hundreds of characters, the same for all K samples of a group) is kept on sample 0 only: a
# third less memory for a large run; PROMPT_TEXT looks it up. `file` numbers the file the row came
# from (RunStore._file_id); `degenerate` is DEGENERATE.
INSERT_ROLLOUTS = f"""
INSERT INTO rollouts SELECT * REPLACE (CASE WHEN sample = 0 THEN prompt END AS prompt), {DEGENERATE}
FROM ({{rows}})
"""
PROMPT_TEXT = "SELECT any_value(prompt) FROM rollouts WHERE prompt_id = $prompt_id AND prompt IS NOT NULL"
QUESTIONS = """
SELECT prompt_id, any_value(question) AS question FROM rollouts
WHERE sample = 0 AND list_contains($prompt_ids, prompt_id) GROUP BY prompt_id
"""
DROP_UNKEYED = "DELETE FROM rollouts WHERE rowid > $after AND prompt_id IS NULL"  # among the rows just read
NEW_ATTEMPTS = "SELECT DISTINCT coalesce(attempt, 0) AS a FROM rollouts WHERE rowid > $after"
DROP_FILE = "DELETE FROM rollouts WHERE file = $file"
DROP_METRICS = "DELETE FROM metrics"
DROP_PHASE = "DELETE FROM eval WHERE phase = $phase"
COUNT = "SELECT count(*) FROM rollouts"
SIZE = "SELECT count(*), coalesce(max(rowid), -1) FROM rollouts"  # rows, and the highest row id (new rows get higher ones)
# A run started again (--resume after a crash) scores its first steps again: of each step, only the
# latest attempt counts. Rows of an earlier attempt at or after a later attempt's first step go.
DROP_SUPERSEDED = {table: f"""
DELETE FROM {table} WHERE EXISTS (
    SELECT 1 FROM (SELECT coalesce(attempt, 0) AS a, min(step) AS first FROM {table} GROUP BY 1) later
    WHERE later.a > coalesce({table}.attempt, 0) AND {table}.step >= later.first)
""" for table in ("rollouts", "metrics")}
# Seconds per training step from the last 20 logged training steps (the `loss` lines): model loading
# and the evals before and after training do not count.
SECONDS_PER_STEP = """
SELECT median(dt / ds) FROM (
    SELECT time - lag(time) OVER (ORDER BY step) AS dt, step - lag(step) OVER (ORDER BY step) AS ds
    FROM (SELECT step, time FROM metrics WHERE name = 'loss' ORDER BY step DESC LIMIT 21)
) WHERE ds > 0
"""
STEP_RANGE = "SELECT min(step) AS lo, max(step) AS hi FROM rollouts"
RANKS = "SELECT DISTINCT rank FROM rollouts ORDER BY rank"

# Category of a rollout: malformed (no parsable Final line), wrong, or correct.
CATEGORY = "CASE WHEN prediction IS NULL THEN 'malformed' WHEN correct THEN 'correct' ELSE 'wrong' END"

# Filters shared by the rollout queries; a NULL parameter means "no filter".
FILTERS = """
    ($step_min::BIGINT IS NULL OR step >= $step_min)
    AND ($step_max::BIGINT IS NULL OR step <= $step_max)
    AND ($rewards::DOUBLE[] IS NULL OR list_contains($rewards, reward))
    AND ($correct::BOOLEAN IS NULL OR correct = $correct)
    AND ($prompt_id::VARCHAR IS NULL OR prompt_id = $prompt_id)
    AND ($rank::BIGINT IS NULL OR rank = $rank)
"""
# The text search is a substring match in which a letter matches its lower- and upper-case forms
# (`caseless_regex`). It reads every completion once (half a second at 1M rollouts), so a search's
# matches are kept (RunStore._searched): the rows whose completion matches, or those whose completion
# does not when most do (a filter by a million row ids costs more than the rest of the query), and the
# prompts whose question matches (a question is the same for all K samples of its group: it is read
# on sample 0). Rows that arrive later are searched as they come (rowid above the last one searched:
# DuckDB never hands out a rowid twice); paging, sorting, other filters and a live run's refreshes
# search nothing again. RE2 scans several times slower than an exact `contains`, so a completion is
# tried only once it contains, exactly, the longest part of the search that has no letters
# (`final: 42` → `: 42`: digits and punctuation have no case). (docs/measured.md, "Rollout store": RE2's own
# `i`, ILIKE, lower() and a lower-cased copy, measured.)
SEARCH_TABLES = ["CREATE TABLE {name}_rows (id BIGINT)", "CREATE TABLE {name}_prompts (prompt_id VARCHAR)"]
DROP_SEARCH = ["DROP TABLE {name}_rows", "DROP TABLE {name}_prompts"]
LAST_ROWID = "SELECT coalesce(max(rowid), -1) FROM rollouts"
COMPLETION_MATCHES = "contains(completion, $letterless) AND regexp_matches(completion, $regex)"
MATCH_SHARE = f"SELECT avg(coalesce({COMPLETION_MATCHES}, false)::INT) > 0.5 FROM rollouts WHERE rowid > $upto - 2000"
SEARCH_ROWS = {  # the matching rows, or (misses) those that do not match: each written as a filter DuckDB cuts short
    False: f"INSERT INTO {{name}}_rows SELECT rowid FROM rollouts WHERE rowid > $after AND rowid <= $upto "
           f"AND {COMPLETION_MATCHES}",
    True: "INSERT INTO {name}_rows SELECT rowid FROM rollouts WHERE rowid > $after AND rowid <= $upto "
          "AND (completion IS NULL OR NOT contains(completion, $letterless) OR NOT regexp_matches(completion, $regex))",
}
SEARCH_PROMPTS = """
INSERT INTO {name}_prompts SELECT DISTINCT prompt_id FROM rollouts
WHERE rowid > $after AND rowid <= $upto AND sample = 0 AND regexp_matches(question, $regex)
      AND prompt_id NOT IN (SELECT prompt_id FROM {name}_prompts)
"""
SEARCHED = {False: "AND (rowid IN (SELECT id FROM {name}_rows) OR prompt_id IN (SELECT prompt_id FROM {name}_prompts))",
            True: "AND (rowid NOT IN (SELECT id FROM {name}_rows) OR prompt_id IN (SELECT prompt_id FROM {name}_prompts))"}
SEARCHES_KEPT = 8  # the latest searches of a store whose matches are kept
# The page's sort orders: the key each row is sorted by, ascending (the key is chosen by the caller,
# the SQL is fixed here). The row id breaks ties, so that every row has a place of its own: a page
# starts just after the key of the last row of the page before it (keyset paging), as fast at the
# last page as at the first, where an OFFSET would sort and skip every row before it.
ORDERS = {
    "newest": "{'step': -step, 'rank': rank, 'prompt_id': prompt_id, 'sample': sample, 'id': rowid}",
    "oldest": "{'step': step, 'rank': rank, 'prompt_id': prompt_id, 'sample': sample, 'id': rowid}",
    "reward_high": "{'reward': -reward, 'step': -step, 'prompt_id': prompt_id, 'sample': sample, 'id': rowid}",
    "reward_low": "{'reward': reward, 'step': -step, 'prompt_id': prompt_id, 'sample': sample, 'id': rowid}",
    "longest": "{'tokens': -completion_tokens, 'step': -step, 'prompt_id': prompt_id, 'sample': sample, 'id': rowid}",
}
PAGE_FROM = {  # where a page starts: the first rows, those after a key or before one, the last rows
    "first": "ORDER BY key LIMIT $limit", "after": "AND key > $key ORDER BY key LIMIT $limit",
    "before": "AND key < $key ORDER BY key DESC LIMIT $limit", "last": "ORDER BY key DESC LIMIT $limit",
}
# One scan finds the matching rows' keys; the page's full rows are fetched for those alone.
ROLLOUTS_PAGE = """
WITH matches AS MATERIALIZED (
    SELECT rowid AS id, {order} AS key FROM rollouts WHERE {filters} {searched}
), page AS (
    SELECT id, key FROM matches WHERE true {page_from}
)
SELECT r.step, r.prompt_id, r.question, r.completion, r.prediction, r.ground_truth, r.reward, r.correct, r.rank,
       r.sample, r.completion_tokens, r.time, page.key, (SELECT count(*) FROM matches) AS total
FROM page JOIN rollouts r ON r.rowid = page.id ORDER BY page.key
"""
ROLLOUT = f"""
SELECT * EXCLUDE (file, degenerate, prompt), ({PROMPT_TEXT}) AS prompt FROM rollouts
WHERE prompt_id = $prompt_id AND step = $step AND sample = $sample ORDER BY rank LIMIT 1
"""
REWARD_HISTOGRAM = """
SELECT reward, count(*) AS n FROM rollouts
WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
GROUP BY reward ORDER BY reward
"""
CATEGORIES_PER_STEP = f"""
SELECT step, count(*) FILTER (WHERE {CATEGORY} = 'malformed') AS malformed,
       count(*) FILTER (WHERE {CATEGORY} = 'wrong') AS wrong,
       count(*) FILTER (WHERE {CATEGORY} = 'correct') AS correct
FROM rollouts GROUP BY step ORDER BY step
"""
STEP_AGGREGATES = """
SELECT step, avg(reward) AS mean_reward, coalesce(stddev_pop(reward), 0) AS std_reward,
       min(reward) AS min_reward, max(reward) AS max_reward,
       avg(correct::INT) AS accuracy, avg((prediction IS NOT NULL)::INT) AS format_rate,
       avg(completion_tokens) AS mean_completion_tokens, count(*) AS n
FROM rollouts GROUP BY step ORDER BY step
"""
# Per prompt and step (or per bin of `$bin` steps, named after its first step, for a long run's heatmap).
PROMPT_ACCURACY = """
SELECT prompt_id, (step - 1) // $bin * $bin + 1 AS step, avg(correct::INT) AS accuracy, count(*) AS n FROM rollouts
WHERE list_contains($prompt_ids, prompt_id) GROUP BY ALL ORDER BY prompt_id, step
"""
# Per prompt over a step window: accuracy at its first and last step there, and its extremes.
PROMPT_SUMMARY = """
WITH per_step AS (
    SELECT prompt_id, step, avg(correct::INT) AS accuracy, sum(correct::INT) AS correct, count(*) AS n
    FROM rollouts
    WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
    GROUP BY prompt_id, step
), summary AS (
    SELECT prompt_id, arg_min(accuracy, step) AS first_accuracy,
           arg_max(accuracy, step) AS last_accuracy, arg_max(accuracy, step) - arg_min(accuracy, step) AS change,
           min(accuracy) AS min_accuracy, max(accuracy) AS max_accuracy, avg(accuracy) AS mean_accuracy,
           count(*) AS steps, sum(correct) AS correct, sum(n) AS n
    FROM per_step GROUP BY prompt_id
)
SELECT * FROM summary WHERE n >= $min_samples
"""
LEADERBOARDS = {  # which prompts each board lists, best first
    "most_improved": "AND change > 0 ORDER BY change DESC, prompt_id",
    "regressed": "AND change < 0 ORDER BY change, prompt_id",
    "never_solved": "AND max_accuracy = 0 ORDER BY n DESC, prompt_id",
    "always_solved": "AND min_accuracy = 1 ORDER BY n DESC, prompt_id",
    "most_changed": "ORDER BY abs(change) DESC, prompt_id",
}
# One step's whole generation batch, group by group: the group view shows one prompt's samples, and the
# advantage (core.advantage) compares each sample with its group and, for some settings, the batch.
STEP_GROUPS = """
SELECT prompt_id, sample, rank, reward, map_keys(rewards) AS names, map_values(rewards) AS reward_values,
       correct, prediction, ground_truth, completion, completion_tokens, question
FROM rollouts WHERE step = $step ORDER BY prompt_id, sample, rank
"""
PROMPT_STEPS = "SELECT DISTINCT step FROM rollouts WHERE prompt_id = $prompt_id ORDER BY step"
EVAL_FLIPS = """
SELECT b.prompt_id, b.question, b.ground_truth, b.correct AS before_correct, a.correct AS after_correct,
       CASE WHEN a.correct THEN 'wrong → right' ELSE 'right → wrong' END AS flip,
       b.prediction AS before_prediction, a.prediction AS after_prediction, b.completion AS before_completion,
       a.completion AS after_completion
FROM eval b JOIN eval a ON a.prompt_id = b.prompt_id AND a.phase = 'after'
WHERE b.phase = 'before' AND b.correct <> a.correct ORDER BY flip DESC, b.prompt_id
"""
EVAL_SUMMARY = """
SELECT phase, avg(correct::INT) AS accuracy, avg(lenient_correct::INT) AS lenient_accuracy,
       avg((prediction IS NOT NULL)::INT) AS format_rate, avg(completion_tokens) AS mean_completion_tokens,
       count(*) AS n
FROM eval GROUP BY phase ORDER BY phase DESC
"""
LENGTH_BY_CATEGORY = f"""
SELECT {CATEGORY} AS category, (completion_tokens // $bin) * $bin AS tokens, count(*) AS n
FROM rollouts
WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
GROUP BY ALL ORDER BY category, tokens
"""
# What the run doctor (core/doctor.py) reads of the rollouts (`degenerate`: DEGENERATE).
DOCTOR_STEPS = """
SELECT step, count(*) AS n, avg(reward) AS mean_reward, avg(correct::INT) AS accuracy,
       avg((prediction IS NOT NULL)::INT) AS format_rate, avg(completion_tokens) AS mean_tokens,
       avg((completion_tokens >= $max_tokens)::INT) AS truncated, avg(degenerate::INT) AS degenerate
FROM rollouts GROUP BY step ORDER BY step
"""
# Per step, the groups (a prompt's K samples) and those whose rewards are all equal: no advantage,
# nothing learned from them; all right, or all not right, and of those, the ones where no completion
# is even well formed (no parsable `Final:` line: the format fails, not the math).
GROUP_SIGNAL = """
WITH groups AS (
    SELECT step, prompt_id, min(reward) = max(reward) AS flat, bool_and(correct) AS all_right,
           NOT bool_or(correct) AS all_wrong, bool_and(prediction IS NULL) AS none_well_formed
    FROM rollouts GROUP BY step, prompt_id
)
SELECT step, count(*) AS groups, count(*) FILTER (WHERE flat) AS no_signal,
       count(*) FILTER (WHERE flat AND all_right) AS all_right, count(*) FILTER (WHERE flat AND all_wrong) AS all_wrong,
       count(*) FILTER (WHERE flat AND none_well_formed) AS none_well_formed
FROM groups GROUP BY step ORDER BY step
"""
EXAMPLES = {  # rollouts that show a finding: the latest ones from step $step_min on
    "truncated": "completion_tokens >= $max_tokens",
    "malformed": "prediction IS NULL",
    "well_formed_wrong": "prediction IS NOT NULL AND NOT correct",
    "degenerate": "degenerate",
    "longest": "completion_tokens >= (SELECT quantile_cont(completion_tokens, 0.9) FROM rollouts WHERE step >= $step_min)",
    "shortest": "completion_tokens <= (SELECT quantile_cont(completion_tokens, 0.1) FROM rollouts WHERE step >= $step_min)",
    "no_signal": "(step, prompt_id) IN (SELECT (step, prompt_id) FROM rollouts WHERE step >= $step_min "
                 "GROUP BY step, prompt_id HAVING min(reward) = max(reward)) AND sample = 0",
}
EXAMPLE = """
SELECT prompt_id, step, sample FROM rollouts WHERE step >= $step_min AND ({condition})
ORDER BY step DESC, prompt_id, sample LIMIT $limit
"""
# TRL's metrics by step; for a long run's charts, at most $points per metric: the mean of each bin of
# steps, named after its first step (as TensorBoard, which draws a sample of 1,000 points).
METRIC_SERIES = """
WITH picked AS (SELECT step, name, value FROM metrics WHERE list_contains($names, name)),
width AS (SELECT greatest(1, ceil((max(step) - min(step) + 1) / $points::BIGINT))::BIGINT AS bin FROM picked)
SELECT (step - 1) // bin * bin + 1 AS step, name, avg(value) AS value FROM picked, width
GROUP BY ALL ORDER BY name, step
"""
METRIC_NAMES = "SELECT DISTINCT name FROM metrics ORDER BY name"


def caseless_regex(text: str) -> str:
    """A regular expression (RE2) that matches `text` literally, except that each letter also matches
    its other case: `Final` → `[Ff][Ii][Nn][Aa][Ll]`; ASCII punctuation is escaped (RE2 refuses an
    escaped `€`). Not RE2's own `i`, which also folds `s` into `ſ`
    and `k` into the Kelvin sign, and then scans up to 4 times slower."""
    def forms(c: str) -> str:
        cases = sorted({c, *(v for v in (c.lower(), c.upper()) if len(v) == 1)})
        return f"[{''.join(cases)}]" if len(cases) > 1 else "\\" + c if c.isascii() and not c.isalnum() else c
    return "".join(forms(c) for c in text)


def _listed(value) -> list:
    """A list column's value from a DataFrame row as a list ([] for null)."""
    return [] if value is None or isinstance(value, float) else list(value)


def _column_value(value, tp):
    """`value` as a column of field type `tp` holds it, only if it is of that field's own JSON type, as
    on the fast path (READ_JSON): text is never read as a number or a boolean ("false" is no boolean).
    ValueError when it does not fit, so that the line is skipped and counted."""
    if value is None:
        return None
    if tp is bool and isinstance(value, bool) or tp is str and isinstance(value, str):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp == dict[str, float] and isinstance(value, dict):
        return {str(k): _column_value(v, float) for k, v in value.items()}
    raise ValueError(f"{value!r} is not a {tp}")


class RunStore:
    """One run directory in DuckDB (its rollouts, metrics and evals), refreshed incrementally."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.con = duckdb.connect(config={"threads": os.cpu_count() or 2})
        self.con.execute(SCHEMA)
        self.skipped = 0  # lines of the run's files that were not a valid record
        self.status: dict = {}
        self._tails: dict[Path, Tail] = {}
        self._file_ids: dict[str, int] = {}
        self._attempts: set[int] = set()  # the attempts (core.train starts) among the rollouts read
        self._searches: dict[str, tuple[str, int, bool]] = {}  # search's regex → tables, last rowid searched, misses?
        self._searches_made = 0
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="run-store-")

    # ---- ingestion -------------------------------------------------------------------------

    def refresh(self, rollouts: bool = True) -> int:
        """Ingest what was appended since the last refresh; return the number of new rollouts. Without
        `rollouts`, only the small files (metrics, evals, status): what the Runs page shows, at once,
        however large the run (the rollouts are read when a page first needs them)."""
        with self._lock:
            before, after = self.con.execute(SIZE).fetchall()[0]
            followed = [path for path in self._tails if path.parent.name == "rollouts"]
            rollout_files = sorted((self.run_dir / "rollouts").glob("rollouts*.jsonl")) if rollouts else followed
            evals = sorted((self.run_dir / "eval").glob("*.jsonl"))  # before, after, any `core.evaluate --phase`
            metrics = self.run_dir / "metrics.jsonl"
            for path in set(self._tails) - {*rollout_files, *evals, metrics}:  # files that went away
                self._drop(path)
                del self._tails[path]
            if rollouts and self._refresh_rollouts(rollout_files):  # the new rows: rowid > after (never reused)
                self._drop_unkeyed(after)
                self._attempts |= {a for (a,) in self.con.execute(NEW_ATTEMPTS, {"after": after}).fetchall()}
                if len(self._attempts) > 1:  # a run started again: only then can rows be superseded
                    self.con.execute(DROP_SUPERSEDED["rollouts"])
            for path in [*evals, metrics]:
                self._refresh_records(path)
            self.status = read_status(self.run_dir) or self.status  # {} if it went missing
            return self.count() - before

    def _tail(self, path: Path) -> Tail:
        return self._tails.setdefault(path, Tail(path))

    def _drop(self, path: Path) -> None:
        """Forget the rows read from `path`."""
        if path.parent.name == "rollouts":
            self.con.execute(DROP_FILE, {"file": self._file_id(str(path))})
        elif path.parent.name == "eval":
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
            if any((now := os.stat(f.name)).st_size != end or now.st_ino != os.fstat(f.fileno()).st_ino
                   for f, end in whole):
                added = None
        except (duckdb.Error, OSError):  # a bad line, or the file went away
            added = None
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("ROLLBACK" if added is None else "COMMIT")
        return added

    def _last_rowid(self) -> int:
        return self.con.execute(LAST_ROWID).fetchall()[0][0]  # fetched to the end: the connection is free again

    def _drop_unkeyed(self, after: int) -> None:
        """A JSON line that is not a rollout (`null`, an object without prompt_id) counts as skipped."""
        self.skipped += self.con.execute(DROP_UNKEYED, {"after": after}).fetchone()[0]

    def _ingest_lines(self, data: bytes, key: str) -> int:
        """Slow, exact path: decode each line in Python, skip and count the bad ones; returns the rows added."""
        import pyarrow as pa

        records, bad = parse_lines(data)
        self.skipped += bad
        rows = {name: [] for name in ROLLOUT_FIELDS}
        for record in records:
            try:
                if record.get("prompt_id") is None:
                    raise ValueError("not a rollout record")
                values = {name: _column_value(record.get(name), tp) for name, tp in ROLLOUT_FIELDS.items()}
            except ValueError:
                self.skipped += 1
                continue
            for name, value in values.items():
                rows[name].append(value)
        types = {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(), "VARCHAR": pa.string(),
                 "MAP(VARCHAR, DOUBLE)": pa.map_(pa.string(), pa.float64())}
        schema = pa.schema([*((k, types[v]) for k, v in ROLLOUT_COLUMNS.items()), ("file", pa.int32())])
        rows["file"] = [self._file_id(key)] * len(rows["step"])
        self.con.register("new_rows", pa.table(rows, schema=schema))
        added = self.con.execute(INSERT_ROLLOUTS.format(rows="SELECT * FROM new_rows")).fetchall()[0][0]
        self.con.unregister("new_rows")
        return added

    def _file_id(self, path: str) -> int:
        """The number that stands for file `path` in the rollouts' `file` column (a path on every row
        would cost some 70 MB a million rows)."""
        return self._file_ids.setdefault(path, len(self._file_ids))

    def _insert(self, table: str, rows: list[dict]) -> None:
        """Append rows (dicts whose keys are `table`'s columns, in order) to metrics or eval."""
        import pyarrow as pa

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
                rows += self._eval_rows(path.stem, record) if path.parent.name == "eval" else self._metric_rows(record)
            except ValueError:
                bad += 1
        self.skipped += bad
        self._insert("eval" if path.parent.name == "eval" else "metrics", rows)
        if rows and path.parent.name != "eval":
            self.con.execute(DROP_SUPERSEDED["metrics"])

    @staticmethod
    def _metric_rows(record: dict) -> list[dict]:
        step, time_ = _column_value(record.get("step"), int), _column_value(record.get("time"), float)
        attempt = _column_value(record.get("attempt"), int)
        return [{"step": step, "time": time_, "name": k, "value": float(v), "attempt": attempt}
                for k, v in record.items() if k not in ("step", "time", "attempt") and isinstance(v, (int, float))]

    @staticmethod
    def _eval_rows(phase: str, record: dict) -> list[dict]:
        record = {EVAL_FIELDS_RENAMED.get(k, k): v for k, v in record.items()}  # files written before the rename
        return [{"phase": phase, **{k: _column_value(record.get(k), tp) for k, tp in EVAL_FIELDS.items()}}]

    # ---- queries ---------------------------------------------------------------------------

    def _query(self, sql: str, params: dict | list | None = None):
        """Run SQL (values bound as parameters) on a fresh cursor; returns a pandas DataFrame."""
        return self.con.cursor().execute(sql, params).df()

    def count(self) -> int:
        return self.con.cursor().execute(COUNT).fetchone()[0]

    def step_range(self) -> tuple[int, int] | None:
        """(first, last) step with rollouts; None before the first one."""
        lo, hi = self.con.cursor().execute(STEP_RANGE).fetchone()
        return None if lo is None else (int(lo), int(hi))

    def seconds_per_step(self) -> float | None:
        """The recent training pace (None before two training steps were logged)."""
        value = self.con.cursor().execute(SECONDS_PER_STEP).fetchone()[0]
        return None if value is None or value != value else float(value)

    def ranks(self) -> list[int]:
        return self._query(RANKS)["rank"].tolist()

    def rollouts_page(self, step_min=None, step_max=None, rewards=None, correct=None, prompt_id=None,
                      search=None, rank=None, order="newest", limit=50, start="first", key=None):
        """(one page of rollouts as a DataFrame, total matching rows). The page holds the first `limit`
        rows in `order`, or (`start`) those just after or just before `key` (a row's `key` column, from
        an earlier page), or the last ones."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if start not in PAGE_FROM:
            raise ValueError(f"start must be one of {', '.join(PAGE_FROM)}, got {start!r}")
        params = {"step_min": step_min, "step_max": step_max, "rewards": list(rewards) if rewards else None,
                  "correct": correct, "prompt_id": prompt_id or None, "rank": rank,
                  "limit": limit, **({"key": key} if start in ("after", "before") else {})}
        with self._lock if search else contextlib.nullcontext():  # a search's tables stay while it reads them
            searched = self._searched(search) if search else ""
            sql = ROLLOUTS_PAGE.format(order=ORDERS[order], filters=FILTERS, searched=searched,
                                       page_from=PAGE_FROM[start])
            page = self._query(sql, params)
        if len(page) or start == "first":
            return page.drop(columns="total"), int(page["total"].iloc[0]) if len(page) else 0
        _, total = self.rollouts_page(step_min, step_max, rewards, correct, prompt_id, search, rank, order, 1)
        return page.drop(columns="total"), total  # past either end: counted on the first page

    def _searched(self, search: str) -> str:
        """The filter (SEARCHED) that keeps the rows matching `search`, its matches brought up to date:
        only the rows that arrived since it was last asked for are searched. A search keeps the rows
        that do not match if most of the latest 2,000 rows match. The latest SEARCHES_KEPT searches are
        kept. Called with the lock held: searches are updated one at a time, never beside an ingestion."""
        letterless = max("".join(c if c.isascii() and not c.isalpha() else "\0" for c in search).split("\0"),
                         key=len)  # the longest part without letters
        params = {"regex": caseless_regex(search), "letterless": letterless,
                  "upto": self._last_rowid()}
        name, after, misses = self._searches.pop(params["regex"], (None, -1, None))  # `Final` and `final`: one search
        if name is None:
            name, self._searches_made = f"search_{self._searches_made}", self._searches_made + 1
            for sql in SEARCH_TABLES:
                self.con.execute(sql.format(name=name))
            misses = bool(self.con.execute(MATCH_SHARE, params).fetchone()[0])
        if params["upto"] > after:
            self.con.execute(SEARCH_ROWS[misses].format(name=name), {**params, "after": after})
            params.pop("letterless")
            self.con.execute(SEARCH_PROMPTS.format(name=name), {**params, "after": after})
        self._searches[params["regex"]] = (name, params["upto"], misses)  # the latest last
        while len(self._searches) > SEARCHES_KEPT:
            self._forget_search(next(iter(self._searches)))
        return SEARCHED[misses].format(name=name)

    def _forget_search(self, regex: str) -> None:
        name, _, _ = self._searches.pop(regex)
        for sql in DROP_SEARCH:
            self.con.execute(sql.format(name=name))

    def rollout(self, prompt_id: str, step: int, sample: int) -> dict | None:
        df = self._query(ROLLOUT, {"prompt_id": prompt_id, "step": step, "sample": sample})
        return df.iloc[0].to_dict() if len(df) else None

    def reward_histogram(self, step_min=None, step_max=None):
        return self._query(REWARD_HISTOGRAM, {"step_min": step_min, "step_max": step_max})

    def categories_per_step(self):
        return self._query(CATEGORIES_PER_STEP)

    def step_aggregates(self):
        return self._query(STEP_AGGREGATES)

    def prompt_accuracy(self, prompt_ids, bin: int = 1):
        return self._query(PROMPT_ACCURACY, {"prompt_ids": list(prompt_ids), "bin": bin})

    def leaderboard(self, board: str, step_min=None, step_max=None, limit: int = 20, min_samples: int = 1):
        """The prompts of one board over a step window, among those with at least `min_samples` sampled
        completions there; `correct` and `n` give how sure each accuracy is (wilson_interval)."""
        if board not in LEADERBOARDS:
            raise ValueError(f"board must be one of {', '.join(LEADERBOARDS)}, got {board!r}")
        sql = f"{PROMPT_SUMMARY} {LEADERBOARDS[board]} LIMIT $limit"  # both parts are constants
        board = self._query(sql, {"step_min": step_min, "step_max": step_max, "limit": limit,
                                  "min_samples": min_samples})
        questions = self._query(QUESTIONS, {"prompt_ids": board["prompt_id"].tolist()})
        board.insert(1, "question", board["prompt_id"].map(dict(zip(questions["prompt_id"], questions["question"]))))
        return board

    def group(self, prompt_id: str, step: int, settings: dict | None = None):
        """All K samples of one prompt at one step, with the advantage TRL gave each one under the
        run's `settings` (core.advantage.run_settings; TRL's defaults when None)."""
        settings = settings or run_settings({})
        batch = self._query(STEP_GROUPS, {"step": step})
        by_function = settings["aggregation"] == "normalize_then_sum"  # then each function's value counts
        groups: dict[str, list[list[float | None]]] = {}
        for row in batch.itertuples():
            if by_function:
                scored = dict(zip(_listed(row.names), _listed(row.reward_values)))
                sample = [scored.get(name) for name in settings["weights"]]
            else:
                sample = [row.reward]
            groups.setdefault(row.prompt_id, []).append([None if v is None or v != v else float(v) for v in sample])
        weights = list(settings["weights"].values()) if by_function else None
        computed = advantages(list(groups.values()), weights, settings["scale_rewards"], settings["aggregation"])
        batch["advantage"] = [a for group in computed for a in group]  # batch's rows are in the groups' order
        rows = batch[batch["prompt_id"] == prompt_id].reset_index(drop=True)
        return rows[["sample", "rank", "reward", "advantage", "correct", "prediction", "ground_truth", "completion",
                     "completion_tokens", "question"]]

    def prompt_steps(self, prompt_id: str) -> list[int]:
        return self._query(PROMPT_STEPS, {"prompt_id": prompt_id})["step"].tolist()

    def eval_flips(self):
        return self._query(EVAL_FLIPS)

    def eval_summary(self):
        return self._query(EVAL_SUMMARY)

    def length_by_category(self, bin: int = 16, step_min=None, step_max=None):
        return self._query(LENGTH_BY_CATEGORY, {"bin": bin, "step_min": step_min, "step_max": step_max})

    def doctor_steps(self, max_tokens: int):
        """Per step: completions, mean reward, accuracy, format rate, mean length, and the shares cut at
        `max_tokens` and degenerate (DEGENERATE)."""
        return self._query(DOCTOR_STEPS, {"max_tokens": max_tokens})

    def group_signal(self):
        return self._query(GROUP_SIGNAL)

    def examples(self, kind: str, step_min: int = 0, max_tokens: int = 0, limit: int = 3) -> list[dict]:
        """A few of the latest rollouts of one kind (EXAMPLES) from `step_min` on: prompt_id, step, sample."""
        if kind not in EXAMPLES:
            raise ValueError(f"kind must be one of {', '.join(EXAMPLES)}, got {kind!r}")
        params = {"step_min": step_min, "limit": limit, **({"max_tokens": max_tokens} if kind == "truncated" else {})}
        return self._query(EXAMPLE.format(condition=EXAMPLES[kind]), params).to_dict("records")

    def metric_series(self, names, points: int | None = None):
        """Each metric of `names` by step: every step, or at most `points` bins of steps (METRIC_SERIES)."""
        return self._query(METRIC_SERIES, {"names": list(names), "points": points})

    def metric_names(self) -> list[str]:
        return self._query(METRIC_NAMES)["name"].tolist()

    def close(self) -> None:
        self.con.close()
        self._tmp.cleanup()


def compare_step_aggregates(stores: dict[str, RunStore]):
    """Per-step aggregates of several runs side by side: the columns of `step_aggregates` plus `run`."""
    import pandas as pd

    frames = [store.step_aggregates().assign(run=name) for name, store in stores.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
