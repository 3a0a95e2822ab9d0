"""The text search of the Rollouts page, and why it is built as it is (below). Its matches are kept per
search and brought up to date as rows arrive."""

from __future__ import annotations

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
SEARCHED = {
    False: "AND (rowid IN (SELECT id FROM {name}_rows) OR prompt_id IN (SELECT prompt_id FROM {name}_prompts))",
    True: "AND (rowid NOT IN (SELECT id FROM {name}_rows) OR prompt_id IN (SELECT prompt_id FROM {name}_prompts))",
}
SEARCHES_KEPT = 8  # the latest searches of a store whose matches are kept


def caseless_regex(text: str) -> str:
    """A regular expression (RE2) that matches `text` literally, except that each letter also matches
    its other case: `Final` → `[Ff][Ii][Nn][Aa][Ll]`; ASCII punctuation is escaped (RE2 refuses an
    escaped `€`). Not RE2's own `i`, which also folds `s` into `ſ`
    and `k` into the Kelvin sign, and then scans up to 4 times slower."""

    def forms(c: str) -> str:
        cases = sorted({c, *(v for v in (c.lower(), c.upper()) if len(v) == 1)})
        return f"[{''.join(cases)}]" if len(cases) > 1 else "\\" + c if c.isascii() and not c.isalnum() else c

    return "".join(forms(c) for c in text)


class Search:
    """RunStore's text search: the filter a page query adds for a search, its matches kept."""

    def _searched(self, search: str) -> str:
        """The filter (SEARCHED) that keeps the rows matching `search`, its matches brought up to date:
        only the rows that arrived since it was last asked for are searched. A search keeps the rows
        that do not match if most of the latest 2,000 rows match. The latest SEARCHES_KEPT searches are
        kept. Called with the lock held: searches are updated one at a time, never beside an ingestion."""
        letterless = max(
            "".join(c if c.isascii() and not c.isalpha() else "\0" for c in search).split("\0"), key=len
        )  # the longest part without letters
        params = {"regex": caseless_regex(search), "letterless": letterless, "upto": self._top_rowid()}
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
