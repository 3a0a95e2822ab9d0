"""The store's named queries, each SQL beside the method that runs it: what the pages, the doctor and
core.plots ask of a run. Every value is a bound parameter; the few parts put into SQL text (a sort
order, a board, a kind of example) are chosen from the constants here."""

from __future__ import annotations

import contextlib
import math

import pandas as pd

from core.stats import wilson_interval

LAST_STEP = 2**63 - 1  # the largest BIGINT: "to the run's last step", in a range of steps


def with_interval(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (columns accuracy and n) with `low` and `high`: each accuracy's 95% Wilson interval."""
    bounds = [wilson_interval(a * n, n) for a, n in zip(frame["accuracy"], frame["n"])]
    return frame.assign(low=[low for low, _ in bounds], high=[high for _, high in bounds])


class Queries:
    """RunStore's queries, on a fresh cursor each (threads may share a store)."""

    # Pieces the queries below share.
    # Category of a rollout: malformed (no parsable Final line), wrong, or correct.
    CATEGORY = "CASE WHEN prediction IS NULL THEN 'malformed' WHEN correct THEN 'correct' ELSE 'wrong' END"
    # Filters shared by the rollout queries; a NULL parameter means "no filter". A NaN among $rewards
    # stands for no reward (NULL: no reward function scored the sample), as reward_histogram gives it.
    FILTERS = """
    ($step_min::BIGINT IS NULL OR step >= $step_min)
    AND ($step_max::BIGINT IS NULL OR step <= $step_max)
    AND ($rewards::DOUBLE[] IS NULL OR list_contains($rewards, coalesce(reward, 'NaN'::DOUBLE)))
    AND ($correct::BOOLEAN IS NULL OR correct = $correct)
    AND ($prompt_id::VARCHAR IS NULL OR prompt_id = $prompt_id)
    AND ($rank::BIGINT IS NULL OR rank = $rank)
"""
    PROMPT_TEXT = "SELECT any_value(prompt) FROM rollouts WHERE prompt_id = $prompt_id AND prompt IS NOT NULL"

    def _query(self, sql: str, params: dict | list | None = None):
        """Run SQL (values bound as parameters) on a fresh cursor; returns a pandas DataFrame."""
        return self.con.cursor().execute(sql, params).df()

    COUNT = "SELECT count(*) FROM rollouts"

    def count(self) -> int:
        return self.con.cursor().execute(self.COUNT).fetchone()[0]

    STEP_RANGE = "SELECT min(step) AS lo, max(step) AS hi FROM rollouts"

    def step_range(self) -> tuple[int, int] | None:
        """(first, last) step with rollouts; None before the first one."""
        lo, hi = self.con.cursor().execute(self.STEP_RANGE).fetchone()
        return None if lo is None else (int(lo), int(hi))

    # Seconds per training step from the last 20 logged training steps (the `loss` lines): model loading
    # and the evals before and after training do not count.
    SECONDS_PER_STEP = """
SELECT median(dt / ds) FROM (
    SELECT time - lag(time) OVER (ORDER BY step) AS dt, step - lag(step) OVER (ORDER BY step) AS ds
    FROM (SELECT step, time FROM metrics WHERE name = 'loss' ORDER BY step DESC LIMIT 21)
) WHERE ds > 0
"""

    def seconds_per_step(self) -> float | None:
        """The recent training pace (None before two training steps were logged)."""
        value = self.con.cursor().execute(self.SECONDS_PER_STEP).fetchone()[0]
        return None if value is None or value != value else float(value)

    LARGEST_GROUP = "SELECT max(sample) + 1 FROM rollouts"

    def largest_group(self) -> int | None:
        """The largest sample index seen plus one: K, where the run's settings do not say."""
        return self.con.cursor().execute(self.LARGEST_GROUP).fetchone()[0]

    RANKS = "SELECT DISTINCT rank FROM rollouts ORDER BY rank"

    def ranks(self) -> list[int]:
        return self._query(self.RANKS)["rank"].tolist()

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
        "first": "ORDER BY key LIMIT $limit",
        "after": "AND key > $key ORDER BY key LIMIT $limit",
        "before": "AND key < $key ORDER BY key DESC LIMIT $limit",
        "last": "ORDER BY key DESC LIMIT $limit",
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

    def rollouts_page(
        self,
        step_min=None,
        step_max=None,
        rewards=None,
        correct=None,
        prompt_id=None,
        search=None,
        rank=None,
        order="newest",
        limit=50,
        start="first",
        key=None,
    ):
        """(one page of rollouts as a DataFrame, total matching rows). The page holds the first `limit`
        rows in `order`, or (`start`) those just after or just before `key` (a row's `key` column, from
        an earlier page), or the last ones."""
        if order not in self.ORDERS:
            raise ValueError(f"order must be one of {', '.join(self.ORDERS)}, got {order!r}")
        if start not in self.PAGE_FROM:
            raise ValueError(f"start must be one of {', '.join(self.PAGE_FROM)}, got {start!r}")
        params = {
            "step_min": step_min,
            "step_max": step_max,
            "rewards": list(rewards) if rewards else None,
            "correct": correct,
            "prompt_id": prompt_id or None,
            "rank": rank,
            "limit": limit,
            **({"key": key} if start in ("after", "before") else {}),
        }
        with self._lock if search else contextlib.nullcontext():  # a search's tables stay while it reads them
            searched = self._searched(search) if search else ""
            sql = self.ROLLOUTS_PAGE.format(
                order=self.ORDERS[order], filters=self.FILTERS, searched=searched, page_from=self.PAGE_FROM[start]
            )
            page = self._query(sql, params)
        if len(page) or start == "first":
            return page.drop(columns="total"), int(page["total"].iloc[0]) if len(page) else 0
        _, total = self.rollouts_page(step_min, step_max, rewards, correct, prompt_id, search, rank, order, 1)
        return page.drop(columns="total"), total  # past either end: counted on the first page

    ROLLOUT = f"""
SELECT * EXCLUDE (file, degenerate, prompt), ({PROMPT_TEXT}) AS prompt FROM rollouts
WHERE prompt_id = $prompt_id AND step = $step AND sample = $sample ORDER BY rank LIMIT 1
"""

    def rollout(self, prompt_id: str, step: int, sample: int) -> dict | None:
        df = self._query(self.ROLLOUT, {"prompt_id": prompt_id, "step": step, "sample": sample})
        return df.iloc[0].to_dict() if len(df) else None

    REWARD_HISTOGRAM = """
SELECT reward, count(*) AS n FROM rollouts
WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
GROUP BY reward ORDER BY reward
"""

    def reward_histogram(self, step_min=None, step_max=None):
        return self._query(self.REWARD_HISTOGRAM, {"step_min": step_min, "step_max": step_max})

    CATEGORIES_PER_STEP = f"""
SELECT step, count(*) FILTER (WHERE {CATEGORY} = 'malformed') AS malformed,
       count(*) FILTER (WHERE {CATEGORY} = 'wrong') AS wrong,
       count(*) FILTER (WHERE {CATEGORY} = 'correct') AS correct
FROM rollouts GROUP BY step ORDER BY step
"""

    def categories_per_step(self):
        return self._query(self.CATEGORIES_PER_STEP)

    STEP_AGGREGATES = """
SELECT step, avg(reward) AS mean_reward, coalesce(stddev_pop(reward), 0) AS std_reward,
       min(reward) AS min_reward, max(reward) AS max_reward,
       avg(correct::INT) AS accuracy, avg((prediction IS NOT NULL)::INT) AS format_rate,
       avg(completion_tokens) AS mean_completion_tokens, count(*) AS n
FROM rollouts GROUP BY step ORDER BY step
"""

    def step_aggregates(self):
        return self._query(self.STEP_AGGREGATES)

    # Per prompt and step (or per bin of `$bin` steps, named after its first step, for a long run's heatmap).
    PROMPT_ACCURACY = """
SELECT prompt_id, (step - 1) // $bin * $bin + 1 AS step, avg(correct::INT) AS accuracy, count(*) AS n FROM rollouts
WHERE list_contains($prompt_ids, prompt_id) GROUP BY ALL ORDER BY prompt_id, step
"""

    def prompt_accuracy(self, prompt_ids, bin: int = 1):
        """Each prompt's accuracy per step (or bin of `bin` steps), its samples `n`, and how sure the
        accuracy is: `low` and `high`, its 95% Wilson interval (core.stats)."""
        return with_interval(self._query(self.PROMPT_ACCURACY, {"prompt_ids": list(prompt_ids), "bin": bin}))

    # The same, by visit: a prompt's k-th sampled step is its visit k (a row of the heatmap without gaps).
    PROMPT_VISITS = """
SELECT prompt_id, row_number() OVER (PARTITION BY prompt_id ORDER BY step) AS visit, step, accuracy, n FROM (
    SELECT prompt_id, step, avg(correct::INT) AS accuracy, count(*) AS n FROM rollouts
    WHERE list_contains($prompt_ids, prompt_id) GROUP BY ALL)
ORDER BY prompt_id, visit
"""

    def prompt_visits(self, prompt_ids):
        """Each prompt's accuracy at its 1st, 2nd, ... sampled step (visit), with that step."""
        return self._query(self.PROMPT_VISITS, {"prompt_ids": list(prompt_ids)})

    PROMPT_REWARDS = """
WITH per_step AS (
    SELECT prompt_id, step, any_value(question) FILTER (WHERE sample = 0) AS question, avg(reward) AS reward,
           count(*) AS n
    FROM rollouts GROUP BY prompt_id, step
)
SELECT prompt_id, any_value(question) AS question, count(*) AS steps, sum(n) AS n,
       sum(reward * n) / sum(n) AS mean_reward, arg_min(reward, step) AS first_reward,
       arg_max(reward, step) AS last_reward, min(step) AS first_step, max(step) AS last_step
FROM per_step GROUP BY prompt_id ORDER BY n DESC, prompt_id LIMIT $limit
"""

    def prompt_rewards(self, limit: int = 500):
        """Each prompt's samples and mean reward, and its group's mean reward at its first and last step,
        the most sampled first (a run without correctness: a plain TRL run's)."""
        return self._query(self.PROMPT_REWARDS, {"limit": limit})

    QUESTIONS = """
SELECT prompt_id, any_value(question) AS question FROM rollouts
WHERE sample = 0 AND list_contains($prompt_ids, prompt_id) GROUP BY prompt_id
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

    def leaderboard(self, board: str, step_min=None, step_max=None, limit: int = 20, min_samples: int = 1):
        """The prompts of one board over a step window, among those with at least `min_samples` sampled
        completions there; `accuracy` over the window, `low` and `high` its 95% Wilson interval."""
        if board not in self.LEADERBOARDS:
            raise ValueError(f"board must be one of {', '.join(self.LEADERBOARDS)}, got {board!r}")
        sql = f"{self.PROMPT_SUMMARY} {self.LEADERBOARDS[board]} LIMIT $limit"  # both parts are constants
        board = self._query(
            sql, {"step_min": step_min, "step_max": step_max, "limit": limit, "min_samples": min_samples}
        )
        questions = self._query(self.QUESTIONS, {"prompt_ids": board["prompt_id"].tolist()})
        board.insert(1, "question", board["prompt_id"].map(dict(zip(questions["prompt_id"], questions["question"]))))
        return with_interval(board.assign(accuracy=board["correct"] / board["n"]))

    PROMPT_STEPS = "SELECT DISTINCT step FROM rollouts WHERE prompt_id = $prompt_id ORDER BY step"

    def prompt_steps(self, prompt_id: str) -> list[int]:
        return self._query(self.PROMPT_STEPS, {"prompt_id": prompt_id})["step"].tolist()

    EVAL_FLIPS = """
SELECT b.prompt_id, b.question, b.ground_truth, b.correct AS before_correct, a.correct AS after_correct,
       CASE WHEN a.correct THEN 'wrong → right' ELSE 'right → wrong' END AS flip,
       b.prediction AS before_prediction, a.prediction AS after_prediction, b.completion AS before_completion,
       a.completion AS after_completion, b.completion_tokens AS before_tokens, a.completion_tokens AS after_tokens
FROM eval b JOIN eval a ON a.prompt_id = b.prompt_id AND a.phase = 'after'
WHERE b.phase = 'before' AND b.correct <> a.correct ORDER BY flip DESC, b.prompt_id
"""

    def eval_flips(self):
        return self._query(self.EVAL_FLIPS)

    EVAL_SUMMARY = """
SELECT phase, avg(correct::INT) AS accuracy, avg(lenient_correct::INT) AS lenient_accuracy,
       avg((prediction IS NOT NULL)::INT) AS format_rate, avg(completion_tokens) AS mean_completion_tokens,
       count(*) AS n
FROM eval GROUP BY phase ORDER BY phase DESC
"""

    def eval_summary(self):
        return self._query(self.EVAL_SUMMARY)

    LENGTH_BY_CATEGORY = f"""
SELECT {CATEGORY} AS category, (completion_tokens // $bin) * $bin AS tokens, count(*) AS n
FROM rollouts
WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
GROUP BY ALL ORDER BY category, tokens
"""

    def length_by_category(self, bin: int = 16, step_min=None, step_max=None):
        return self._query(self.LENGTH_BY_CATEGORY, {"bin": bin, "step_min": step_min, "step_max": step_max})

    LENGTH_RANGE = """
SELECT min(completion_tokens), max(completion_tokens) FROM rollouts
WHERE ($step_min::BIGINT IS NULL OR step >= $step_min) AND ($step_max::BIGINT IS NULL OR step <= $step_max)
"""

    def length_bin(self, step_min=None, step_max=None, bins: int = 30) -> int:
        """A bin width for the completion lengths of a step window, from the lengths themselves: whole
        tokens, at most `bins` bins (one token a bin for short completions)."""
        lo, hi = self.con.cursor().execute(self.LENGTH_RANGE, {"step_min": step_min, "step_max": step_max}).fetchone()
        return 1 if lo is None else max(1, math.ceil((hi - lo + 1) / bins))

    # Every rollout for core.replay, a few whole steps at a time, a step's rows grouped by prompt (not in
    # TRL's order within the step, its sampler's shuffle, which the rollouts do not record).
    # The prompt text is kept on sample 0 of each group (ingest.INSERT_ROLLOUTS): each sample gets it back.
    STEP_SIZES = "SELECT step, count(*) AS n FROM rollouts GROUP BY step ORDER BY step"
    STEPS_ROWS = """
SELECT step, prompt_id, sample, rank, max(prompt) OVER (PARTITION BY step, prompt_id) AS prompt, question, completion,
       ground_truth, reward, map_keys(rewards) AS names, map_values(rewards) AS "values"
FROM rollouts WHERE step BETWEEN $first AND $last ORDER BY step, prompt_id, sample, rank, rowid
"""

    def rollout_batches(self, rows: int):
        """Every rollout (STEPS_ROWS, as lists of dicts) in step order, whole steps at a time, about `rows`
        in a batch (a larger step comes whole): what is held at once is bounded by `rows`, not the run."""
        sizes = self.con.cursor().execute(self.STEP_SIZES).fetchall()
        start = 0
        while start < len(sizes):
            end, count = start, sizes[start][1]
            while end + 1 < len(sizes) and count + sizes[end + 1][1] <= rows:
                end, count = end + 1, count + sizes[end + 1][1]
            batch = self.con.cursor().sql(self.STEPS_ROWS, params={"first": sizes[start][0], "last": sizes[end][0]})
            yield batch.to_arrow_table().to_pylist()
            start = end + 1

    COMPLETION_LENGTHS = """
SELECT avg(completion_tokens) AS mean, median(completion_tokens) AS median, max(completion_tokens) AS max FROM rollouts
"""

    def completion_lengths(self) -> dict:
        """The completions' lengths in tokens: mean, median and max (None each without token counts)."""
        row = self._query(self.COMPLETION_LENGTHS).iloc[0]
        return {name: None if pd.isna(row[name]) else round(float(row[name]), 1) for name in ("mean", "median", "max")}

    # A degenerate completion (what the run doctor looks for, core/doctor.py): a well-formed `Final:`
    # line with nothing before it, or text that repeats itself (its first 24 characters come again later
    # on: "so so so so ...", the same sentence over and over). Decided when the doctor asks, for the rows
    # not decided before of the steps it reads (of its first and last fifth, those whose number $every
    # divides): a cold load (what the Rollouts page waits for) does not pay for it, nor do the steps
    # between (docs/measured.md, the store). The anchored regex, not ltrim, which would copy each completion.
    DECIDE_DEGENERATE = """
UPDATE rollouts SET degenerate = coalesce(prediction IS NOT NULL AND regexp_matches(completion, '^ *Final:')
    OR length(completion) >= 100 AND contains(substr(completion, 25), substr(completion, 1, 24)), false)
WHERE degenerate IS NULL AND step BETWEEN $first AND $last AND step % $every = 0
"""

    def _with_degenerate(self, sql: str, params: dict, first: int, last: int, every: int = 1):
        """Run `sql` once every row of steps `first` to `last` (those whose number `every` divides) read so far
        has its degenerate flag: under the ingestion lock, so that no refresh comes between (its transaction on
        self.con, its rows undecided)."""
        with self._lock:
            self.con.execute(self.DECIDE_DEGENERATE, {"first": first, "last": last, "every": every})
            return self._query(sql, params)

    # What the run doctor (core/doctor.py) reads of the rollouts, per step.
    DOCTOR_STEPS = """
SELECT step, count(*) AS n, avg(reward) AS mean_reward, avg(correct::INT) AS accuracy,
       avg((prediction IS NOT NULL)::INT) AS format_rate, avg(completion_tokens) AS mean_tokens,
       avg((completion_tokens >= $max_tokens)::INT) AS truncated
FROM rollouts GROUP BY step ORDER BY step
"""

    def doctor_steps(self, max_tokens: int):
        """Per step: completions, mean reward, accuracy, format rate, mean length, and the share cut at
        `max_tokens`."""
        return self._query(self.DOCTOR_STEPS, {"max_tokens": max_tokens})

    DEGENERATE_SHARES = """
SELECT step, avg(degenerate::INT) AS degenerate FROM rollouts
WHERE step BETWEEN $first AND $last AND step % $every = 0 GROUP BY step ORDER BY step
"""

    def degenerate_shares(self, first: int, last: int, every: int = 1):
        """Per step from `first` to `last` whose number `every` divides: the share of degenerate completions
        (DECIDE_DEGENERATE)."""
        params = {"first": first, "last": last, "every": every}
        return self._with_degenerate(self.DEGENERATE_SHARES, params, first, last, every)

    # Per step, the groups (a prompt's K samples) and those whose rewards are all equal: no advantage,
    # nothing learned from them; all right, or all not right, and of those, the ones where no completion
    # is even well formed (no parsable `Final:` line: the format fails, not the math) and the ones where
    # every completion was cut at the token limit ($max_tokens).
    GROUP_SIGNAL = """
WITH groups AS (
    SELECT step, prompt_id, min(reward) = max(reward) AS flat, bool_and(correct) AS all_right,
           NOT bool_or(correct) AS all_wrong, bool_and(prediction IS NULL) AS none_well_formed,
           bool_and(completion_tokens >= $max_tokens) AS all_truncated
    FROM rollouts GROUP BY step, prompt_id
)
SELECT step, count(*) AS groups, count(*) FILTER (WHERE flat) AS no_signal,
       count(*) FILTER (WHERE flat AND all_right) AS all_right, count(*) FILTER (WHERE flat AND all_wrong) AS all_wrong,
       count(*) FILTER (WHERE flat AND none_well_formed) AS none_well_formed,
       count(*) FILTER (WHERE flat AND all_truncated) AS all_truncated
FROM groups GROUP BY step ORDER BY step
"""

    def group_signal(self, max_tokens: int):
        """Per step: groups, those without a learning signal (no_signal), and why (GROUP_SIGNAL)."""
        return self._query(self.GROUP_SIGNAL, {"max_tokens": max_tokens})

    EXAMPLES = {  # rollouts that show a finding: the latest ones from step $step_min on
        "truncated": "completion_tokens >= $max_tokens",
        "malformed": "prediction IS NULL",
        "well_formed_wrong": "prediction IS NOT NULL AND NOT correct",
        "degenerate": "degenerate",
        "longest": "completion_tokens >= (SELECT quantile_cont(completion_tokens, 0.9) FROM rollouts WHERE step >= $step_min)",
        "shortest": "completion_tokens <= (SELECT quantile_cont(completion_tokens, 0.1) FROM rollouts WHERE step >= $step_min)",
        "no_signal": "(step, prompt_id) IN (SELECT (step, prompt_id) FROM rollouts WHERE step >= $step_min "
        "GROUP BY step, prompt_id HAVING min(reward) = max(reward)) AND sample = 0",
        "best_of_signal": "(step, prompt_id, reward) IN (SELECT (step, prompt_id, max(reward)) FROM rollouts "
        "WHERE step >= $step_min GROUP BY step, prompt_id HAVING min(reward) < max(reward))",
    }
    EXAMPLE = """
SELECT prompt_id, step, sample FROM rollouts WHERE step >= $step_min AND ({condition})
ORDER BY step DESC, prompt_id, sample LIMIT $limit
"""

    def examples(self, kind: str, step_min: int = 0, max_tokens: int = 0, limit: int = 3, every: int = 1) -> list[dict]:
        """A few of the latest rollouts of one kind (self.EXAMPLES) from `step_min` on: prompt_id, step, sample.
        Degenerate ones are among the rows whose flag is decided; this call decides those of the steps whose
        number `every` divides (what the run doctor read), and no other step's."""
        if kind not in self.EXAMPLES:
            raise ValueError(f"kind must be one of {', '.join(self.EXAMPLES)}, got {kind!r}")
        params = {"step_min": step_min, "limit": limit, **({"max_tokens": max_tokens} if kind == "truncated" else {})}
        sql = self.EXAMPLE.format(condition=self.EXAMPLES[kind])
        if kind == "degenerate":  # the flags of the steps it reads, decided first
            return self._with_degenerate(sql, params, step_min, LAST_STEP, every).to_dict("records")
        return self._query(sql, params).to_dict("records")

    # TRL's metrics by step; for a long run's charts, at most $points per metric: the mean of each bin of
    # steps, named after its first step (as TensorBoard, which draws a sample of 1,000 points).
    # `minutes`: the wall-clock time since the run's first logged step, as TensorBoard's relative axis
    # (a pause before a resume included), at the first step of each bin.
    METRIC_SERIES = """
WITH picked AS (SELECT step, name, value, time FROM metrics WHERE list_contains($names, name)),
width AS (SELECT greatest(1, ceil((max(step) - min(step) + 1) / $points::BIGINT))::BIGINT AS bin FROM picked)
SELECT (step - 1) // bin * bin + 1 AS step, name, avg(value) AS value,
       (min(time) - (SELECT min(time) FROM metrics)) / 60 AS minutes
FROM picked, width GROUP BY ALL ORDER BY name, step
"""

    def metric_series(self, names, points: int | None = None):
        """Each metric of `names` by step (and minutes since the run's start): every step, or at most
        `points` bins of steps (self.METRIC_SERIES)."""
        return self._query(self.METRIC_SERIES, {"names": list(names), "points": points})

    METRIC_NAMES = "SELECT DISTINCT name FROM metrics ORDER BY name"

    def metric_names(self) -> list[str]:
        return self._query(self.METRIC_NAMES)["name"].tolist()


def compare_step_aggregates(stores: dict):
    """Per-step aggregates of several runs side by side: the columns of `step_aggregates` plus `run`."""
    frames = [store.step_aggregates().assign(run=name) for name, store in stores.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
