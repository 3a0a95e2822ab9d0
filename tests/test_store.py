"""The rollout store: exactly-once ingestion under a live writer, and every named query checked
against a plain-Python computation on a small fixture run."""

import json
import subprocess
import sys
import threading
from collections import defaultdict
from statistics import mean, pstdev, stdev

import pytest

from core.advantage import run_settings
from core.rundir import EVAL_FIELDS, EVAL_FIELDS_RENAMED, ROLLOUT_FIELDS, rollout_record
from core.stats import wilson_interval
from core.store import RunStore, compare_step_aggregates
from tests.fake_run import write_run

RECORD = rollout_record(
    step=0,
    prompt_id="p",
    prompt="P",
    question="Q",
    completion="Final: 1",
    prediction="1",
    ground_truth="1",
    reward=1.0,
    correct=True,
    rank=0,
    sample=0,
    completion_tokens=3,
    time=1.0,
)


def line(**fields):
    return json.dumps({**RECORD, **fields}) + "\n"


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "rollouts").mkdir()
    return tmp_path


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def test_store_columns_are_the_rollout_record(run_dir):
    record = {**RECORD, "rewards": {"gsm8k": 1.0, "format": 0.5}}
    append(run_dir / "rollouts" / "rollouts.jsonl", json.dumps(record) + "\n")
    store = RunStore(run_dir)
    store.refresh()
    columns = store._query("SELECT * EXCLUDE (file, degenerate, advantage) FROM rollouts").columns
    assert list(columns) == list(ROLLOUT_FIELDS)
    assert store._query("SELECT advantage FROM rollouts")["advantage"].isna().all()  # only a plain TRL run has it
    got = store.rollout("p", 0, 0)
    assert {name: got[name] for name in ROLLOUT_FIELDS} == record


def test_good_lines_take_the_fast_path_and_keep_their_values(run_dir, monkeypatch):
    """Values of every field's own type, as runs write them, are read by the one checked read_json
    (READ_JSON); the exact path, line by line in Python, is only for lines that do not fit. (A check that
    raised on good values would still give right rows, by the slow way: this test is what sees it.)"""
    from core.store.ingest import Ingestion

    monkeypatch.setattr(Ingestion, "_ingest_lines", lambda *args: pytest.fail("a good line went line by line"))
    odd = {
        "step": -3,
        "completion": "7 apples, then 8",
        "prediction": "-2.5",
        "reward": 1,
        "time": 1.7e9,
        "rewards": {"gsm8k": 0.1, "format": None, "length": -1e-5},
        "correct": False,
        "question": "",
        "prompt_id": 'a "quoted" \\ id \u00e9',
        "completion_tokens": 2**62,
        "attempt": None,
        "ground_truth": "42",
        "prompt": "line one\nline two",
    }
    records = [{**RECORD, "rewards": {"gsm8k": 1.0}}, {**RECORD, **odd, "sample": 1}]
    append(run_dir / "rollouts" / "rollouts.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    store = RunStore(run_dir)
    assert store.refresh() == 2 and store.skipped == 0
    for record in records:
        got = store.rollout(record["prompt_id"], record["step"], record["sample"])
        assert {name: got[name] for name in ROLLOUT_FIELDS} == {**record, "prompt": got["prompt"]}


def test_the_highest_row_id_is_found_from_the_last_one_and_again_when_that_row_went(run_dir):
    # RunStore._top_rowid reads only the row ids from the highest it last found on; when the rows that
    # high went (a resume's superseded steps, a file dropped), it reads them all again
    store = RunStore(run_dir)
    highest = "SELECT coalesce(max(rowid), -1) AS m FROM rollouts"
    assert store._top_rowid() == -1
    for sample in range(3):
        append(run_dir / "rollouts" / "rollouts.jsonl", "".join(line(step=s, sample=sample) for s in range(1, 5)))
        store.refresh()
        assert store._top_rowid() == store._query(highest)["m"][0] == 4 * sample + 3
    store.con.execute("DELETE FROM rollouts WHERE rowid >= 9")  # the top three rows go
    assert store._top_rowid() == store._query(highest)["m"][0] == 8
    store.con.execute("DELETE FROM rollouts")
    assert store._top_rowid() == -1


@pytest.mark.parametrize("path", ["fast", "exact"])
def test_degenerate_flag_is_the_rule_in_plain_python(run_dir, path):
    """DECIDE_DEGENERATE (core/store/queries.py), on rows of both ingestion paths, when the doctor asks for
    their steps and again for the rows read since: a well-formed Final line with nothing but spaces before
    it, or a text of 100 characters or more whose first 24 come again later on. Rows of other steps wait."""
    loop = "so the answer is so the answer is "
    texts = [
        "Final: 4",
        "   Final: 4",
        "\tFinal: 4",
        "\n Final: 4",
        "final: 4",
        "2+2=4\nFinal: 4",
        loop * 3,
        (loop * 3)[:99],
        "x" * 23 + "y" + "x" * 100,
        "ab" * 60,
        "é" * 24 + "a" * 60 + "é" * 24,
        "Final: 4 " + "z" * 100 + "Final: 4 " + "z" * 15,
    ]
    lines = [line(sample=i, completion=text, prediction=None if i % 5 == 4 else "4") for i, text in enumerate(texts)]
    if path == "exact":
        lines.append('{"step": 0, "prompt_id": "p", "sample": 1.5}\n')  # a bad line: this file goes line by line
    half = len(lines) // 2
    append(run_dir / "rollouts" / "rollouts.jsonl", "".join(lines[:half]))
    store = RunStore(run_dir)
    store.refresh()
    step = RECORD["step"]
    undecided = "SELECT count(*) FILTER (WHERE degenerate IS NULL) AS n FROM rollouts"
    assert store.degenerate_shares(step + 1, step + 9).empty and store._query(undecided)["n"][0] == half
    assert store.degenerate_shares(step, step)["step"].tolist() == [step]
    append(run_dir / "rollouts" / "rollouts.jsonl", "".join(lines[half:]))
    store.refresh()
    assert store._query(undecided)["n"][0] == len(texts) - half
    want = {
        i: (i % 5 != 4 and text.lstrip(" ").startswith("Final:")) or (len(text) >= 100 and text[:24] in text[24:])
        for i, text in enumerate(texts)
    }
    assert [r["sample"] for r in store.examples("degenerate", limit=20)] == [i for i in want if want[i]]
    assert store.skipped == (path == "exact")
    got = dict(store._query("SELECT sample, degenerate FROM rollouts").itertuples(index=False))
    assert got == want and 0 < sum(want.values()) < len(texts)


# ---- exactness -------------------------------------------------------------------------------


def test_half_written_line_waits_for_its_newline(run_dir):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    whole = line(sample=1)
    append(path, line(sample=0) + whole[:40])
    store = RunStore(run_dir)
    assert store.refresh() == 1 and store.skipped == 0
    append(path, whole[40:])
    assert store.refresh() == 1 and store.count() == 2 and store.skipped == 0
    assert store.refresh() == 0
    assert sorted(store._query("SELECT sample FROM rollouts")["sample"]) == [0, 1]


def test_a_complete_object_without_its_newline_is_not_ingested_yet(run_dir):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    append(path, line(sample=0) + line(sample=1).rstrip("\n"))  # valid JSON, but the line is not finished
    store = RunStore(run_dir)
    assert store.refresh() == 1
    append(path, "\n")
    assert store.refresh() == 1 and store.count() == 2


@pytest.mark.parametrize(
    "bad",
    [
        '{"step": 1, "prom',
        "42",
        "null",
        "[1, 2]",
        '{"step": "abc", "prompt_id": "x"}',
        '{"step": 3}',
        '{"prompt_id": "p"} trailing',
    ],
)
def test_corrupt_lines_are_skipped_and_counted_never_rows_of_nulls(run_dir, bad):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    append(path, line(sample=0) + bad + "\n" + line(sample=1) + "\n")  # a blank line is not a record either
    store = RunStore(run_dir)
    assert store.refresh() == 2 and store.skipped == 1
    rows = store._query("SELECT * FROM rollouts ORDER BY sample")
    assert rows["sample"].tolist() == [0, 1] and rows["prompt_id"].notna().all()
    assert store.rollout("p", 0, 1)["prompt"] == "P"  # the line-by-line path stores prompts the same way
    append(path, line(sample=2) + "not json\n")  # the same holds for later, incremental refreshes
    assert store.refresh() == 1 and store.skipped == 2


def test_shrunk_or_replaced_file_is_read_again_from_scratch(run_dir):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    append(path, "".join(line(step=0, sample=i) for i in range(4)))
    store = RunStore(run_dir)
    assert store.refresh() == 4
    path.write_text(line(step=9, sample=0))  # restarted under the same id: truncated and rewritten
    store.refresh()
    assert store._query("SELECT step, sample FROM rollouts").values.tolist() == [[9, 0]]
    # replaced by a new file of the same size (another inode, other bytes)
    new = run_dir / "new.jsonl"
    new.write_text(line(step=7, sample=0))
    new.replace(path)
    store.refresh()
    assert store._query("SELECT step FROM rollouts")["step"].tolist() == [7]


def test_new_rank_file_mid_run(run_dir):
    append(run_dir / "rollouts" / "rollouts.jsonl", line(rank=0))
    store = RunStore(run_dir)
    assert store.refresh() == 1
    append(run_dir / "rollouts" / "rollouts.rank1.jsonl", line(rank=1, sample=1) + line(rank=1, sample=2))
    assert store.refresh() == 2
    assert sorted(store._query("SELECT rank FROM rollouts")["rank"]) == [0, 1, 1]


def test_rank_files_read_together_keep_their_rows_apart(run_dir):
    """Every rank file's new lines are read in one query; a bad line in one file costs that line only,
    and each row remembers its file (a file replaced later takes exactly its own rows with it)."""
    rank0, rank1 = run_dir / "rollouts" / "rollouts.jsonl", run_dir / "rollouts" / "rollouts.rank1.jsonl"
    append(rank0, line(rank=0, sample=0) + line(rank=0, sample=1))
    append(rank1, line(rank=1, sample=4))
    store = RunStore(run_dir)
    assert store.refresh() == 3
    append(rank0, line(rank=0, sample=2))
    append(
        rank1, line(rank=1, sample=5) + '{"step": 1, "prompt_id": "p", "correct": "false"}\n' + line(rank=1, sample=6)
    )
    assert store.refresh() == 3 and store.skipped == 1
    rank1.write_text(line(rank=1, sample=7))  # rank 1 restarted: its file rewritten
    store.refresh()
    rows = store._query("SELECT rank, sample FROM rollouts ORDER BY sample").values.tolist()
    assert rows == [[0, 0], [0, 1], [0, 2], [1, 7]]


WRITER = """
import json, sys, time
path, n, rank, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(path, "a") as f:
    for i in range(n):
        text = json.dumps({"step": i // 8, "prompt_id": f"p{i % 3}", "prompt": "P" * 600, "question": "Q",
                           "completion": "C" * (i % 900), "prediction": None, "ground_truth": "1", "reward": 0.0,
                           "correct": False, "rank": rank, "sample": i, "completion_tokens": i % 50,
                           "time": time.time()}) + "\\n"
        cut = len(text) // 3
        f.write(text[:cut]); f.flush()           # a reader can see a half-written line here
        if i % every == every // 2:              # ... and does: it says so, and waits for the reader
            print(i, flush=True)
            sys.stdin.readline()
        f.write(text[cut:]); f.flush()
"""


def test_live_writers_and_a_refreshing_reader_agree_exactly(run_dir):
    """Two writers append lines in pieces while a reader refreshes: at the writers' pauses, each with a
    line half written, the reader has exactly the complete lines; between them it refreshes while they
    write; at the end it has every line once."""
    n, every = 3000, 500
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(run_dir / "rollouts" / name), str(n), str(rank), str(every)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank, name in enumerate(["rollouts.jsonl", "rollouts.rank1.jsonl"])
    ]
    store = RunStore(run_dir)
    for pause in range(every // 2, n, every):
        assert [int(w.stdout.readline()) for w in writers] == [pause, pause]  # both paused mid-line
        store.refresh()
        assert store.count() == 2 * pause and store.skipped == 0  # lines 0..pause-1 of each, none half read
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        store.refresh()  # while they write
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    store.refresh()
    assert store.count() == 2 * n and store.skipped == 0
    dupes = store._query("SELECT rank, sample, count(*) c FROM rollouts GROUP BY ALL HAVING c > 1")
    assert dupes.empty


def test_threads_share_a_store(run_dir):
    append(run_dir / "rollouts" / "rollouts.jsonl", "".join(line(step=i // 4, sample=i % 4) for i in range(400)))
    store = RunStore(run_dir)
    errors = []

    def work():
        try:
            for _ in range(20):
                store.refresh()
                assert store.rollouts_page(limit=5)[1] == 400
                assert len(store.step_aggregates()) == 100
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---- the named queries against plain Python ---------------------------------------------------


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    """~2,000 rollouts over 2 ranks (groups of K=8), metrics, and eval files with flips."""
    run_dir = tmp_path_factory.mktemp("fixture")
    write_run(run_dir, 2048, ranks=2, prompts=40, ramp=40)
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "time": 1.0 + s, "loss": 0.5 / s, "reward": s / 10, "note": "text"}) + "\n"
            for s in range(1, 6)
        )
    )
    (run_dir / "eval").mkdir()
    for phase, right in (("before", {0, 1}), ("after", {1, 2}), ("full_test", {0, 1, 2})):  # + a core.evaluate
        # full_test is written with the names eval files had before
        names = {new: old for old, new in EVAL_FIELDS_RENAMED.items()} if phase == "full_test" else {}
        (run_dir / "eval" / f"{phase}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        names.get(k, k): v
                        for k, v in {
                            "prompt_id": f"e{i}",
                            "question": f"q{i}",
                            "prompt": "P",
                            "ground_truth": "1",
                            "prediction": "1" if i in right else "2",
                            "completion": f"{phase} {i}",
                            "correct": i in right,
                            "completion_tokens": 10 + i,
                        }.items()
                    }
                )
                + "\n"
                for i in range(4)
            )
        )
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "global_step": 5}))
    store = RunStore(run_dir)
    store.refresh()
    records = [
        json.loads(x) for f in sorted((run_dir / "rollouts").glob("*.jsonl")) for x in f.read_text().splitlines()
    ]
    return store, records


def by(records, key):
    groups = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return groups


def category(r):
    return "malformed" if r["prediction"] is None else "correct" if r["correct"] else "wrong"


def test_counts_status_and_metrics(fixture_run):
    store, records = fixture_run
    assert store.count() == len(records) == 2048 and store.skipped == 0
    assert store.status == {"state": "finished", "global_step": 5}
    series = store.metric_series(["loss"])
    assert series["step"].tolist() == [1, 2, 3, 4, 5]
    assert series["value"].tolist() == pytest.approx([0.5 / s for s in range(1, 6)])
    assert store.metric_names() == ["loss", "reward"]  # numbers only


def test_metric_series_of_a_long_run_is_binned_for_charts(run_dir):
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "time": s, "loss": s % 7, "reward": 1 / s}) + "\n" for s in range(1, 2501))
    )
    store = RunStore(run_dir)
    store.refresh(rollouts=False)
    every = store.metric_series(["loss"])
    assert every["step"].tolist() == list(range(1, 2501)) and every["value"].tolist() == [s % 7 for s in range(1, 2501)]
    assert every["minutes"].tolist() == pytest.approx([(s - 1) / 60 for s in range(1, 2501)])  # since the first step
    binned = store.metric_series(["loss", "reward"], points=1000)
    for name, value in (("loss", lambda s: s % 7), ("reward", lambda s: 1 / s)):
        part = binned[binned["name"] == name]
        bins = [range(first, min(first + 3, 2501)) for first in range(1, 2501, 3)]  # 2,500 steps in <= 1,000 bins of 3
        assert part["step"].tolist() == [b[0] for b in bins]
        assert part["value"].tolist() == pytest.approx([mean(value(s) for s in b) for b in bins])
        assert part["minutes"].tolist() == pytest.approx([(b[0] - 1) / 60 for b in bins])


def test_rollouts_page_filters_order_and_total(fixture_run):
    store, records = fixture_run
    cases = [
        ({}, lambda r: True),
        ({"step_min": 3, "step_max": 7}, lambda r: 3 <= r["step"] <= 7),
        ({"rewards": [0.0, 0.1]}, lambda r: r["reward"] in (0.0, 0.1)),
        ({"correct": True}, lambda r: r["correct"]),
        ({"rank": 1}, lambda r: r["rank"] == 1),
        ({"prompt_id": records[5]["prompt_id"]}, lambda r: r["prompt_id"] == records[5]["prompt_id"]),
        ({"search": "FINAL: 4"}, lambda r: "final: 4" in (r["question"] + "\0" + r["completion"]).lower()),
        ({"search": "question 1"}, lambda r: "question 1" in (r["question"] + "\0" + r["completion"]).lower()),
        ({"search": "(['%_"}, lambda r: False),  # regex and LIKE characters are taken literally
    ]
    PAGE = 43  # pages end inside groups of K=8 and between ties
    for filters, keep in cases:
        expected = [
            (r["step"], r["rank"], r["prompt_id"], r["sample"])
            for r in sorted(
                (r for r in records if keep(r)), key=lambda r: (-r["step"], r["rank"], r["prompt_id"], r["sample"])
            )
        ]
        walked, page, total = [], None, None
        while page is None or len(page):  # page after page, each from the last key of the one before
            assert len(walked) <= len(records), filters  # never the same rows again
            page, total = store.rollouts_page(
                **filters, limit=PAGE, **({"start": "after", "key": page["key"].iloc[-1]} if page is not None else {})
            )
            walked += list(zip(page["step"], page["rank"], page["prompt_id"], page["sample"]))
        assert total == len(expected) and walked == expected, filters
        last, _ = store.rollouts_page(**filters, limit=PAGE, start="last")
        assert list(zip(last["step"], last["rank"], last["prompt_id"], last["sample"])) == expected[-PAGE:], filters
        if len(last):
            before, _ = store.rollouts_page(**filters, limit=PAGE, start="before", key=last["key"].iloc[0])
            assert (
                list(zip(before["step"], before["rank"], before["prompt_id"], before["sample"]))
                == expected[-2 * PAGE : -PAGE]
            ), filters
    page, total = store.rollouts_page(order="reward_high", limit=5)
    assert page["reward"].tolist() == sorted((r["reward"] for r in records), reverse=True)[:5]
    page, total = store.rollouts_page(order="longest", limit=300)
    nxt, _ = store.rollouts_page(order="longest", limit=300, start="after", key=page["key"].iloc[-1])
    lengths = sorted((r["completion_tokens"] for r in records), reverse=True)
    assert page["completion_tokens"].tolist() + nxt["completion_tokens"].tolist() == lengths[:600]
    with pytest.raises(ValueError, match="order must be one of"):
        store.rollouts_page(order="rowid; DROP TABLE rollouts")
    with pytest.raises(ValueError, match="start must be one of"):
        store.rollouts_page(start="middle")


def test_keyset_paging_keeps_every_row_once_with_ties_and_nulls(run_dir):
    # the same prompt twice at one step (a small prompt set), and rows without a reward or a length
    append(
        run_dir / "rollouts" / "rollouts.jsonl",
        "".join(
            line(step=s, sample=k % 2, reward=None if k == 3 else 1.0, completion_tokens=None if k == 2 else k)
            for s in (1, 2)
            for k in range(5)
        ),
    )
    store = RunStore(run_dir)
    store.refresh()
    for order in ("newest", "reward_high", "longest"):
        seen, page = [], None
        while page is None or len(page):
            assert len(seen) <= 10, order
            page, total = store.rollouts_page(
                order=order, limit=3, **({"start": "after", "key": page["key"].iloc[-1]} if page is not None else {})
            )
            seen += [tuple(k.values()) for k in page["key"]]
        assert total == 10 and len(seen) == len(set(seen)) == 10, order


def test_search_matches_each_letter_in_either_case_and_the_rest_exactly(run_dir):
    texts = ["Cost €5 — Ünd so", "COST €5 — ÜND SO", "cost €5 - und so", "cost 5 — ünd", "ſo Kelvin", "a.b*c (x)"]
    append(
        run_dir / "rollouts" / "rollouts.jsonl",
        "".join(line(step=1, sample=i, completion=t, question="Q") for i, t in enumerate(texts)),
    )
    store = RunStore(run_dir)
    store.refresh()
    for search, expected in (
        ("cost €5 — ünd", [0, 1]),
        ("ÜND so", [0, 1]),
        ("€", [0, 1, 2]),
        ("—", [0, 1, 3]),
        ("so", [0, 1, 2]),
        ("kelvin", [4]),
        ("A.B*C (X)", [5]),
        ("a.b.c", []),
    ):
        page, total = store.rollouts_page(search=search, order="oldest")
        assert page["sample"].tolist() == expected and total == len(expected), search


def test_a_searchs_matches_are_kept_and_brought_up_to_date_as_rows_arrive(run_dir):
    from core.store import SEARCHES_KEPT

    path = run_dir / "rollouts" / "rollouts.jsonl"
    records = []

    def add(*rows):
        records.extend({**RECORD, **fields} for fields in rows)
        append(path, "".join(line(**fields) for fields in rows))

    def found(search):  # the rows a search shows, and plain Python's
        page, total = store.rollouts_page(search=search, order="oldest", limit=100)
        prompts = {r["prompt_id"] for r in records if r["sample"] == 0 and search.lower() in r["question"].lower()}
        expected = [
            (r["step"], r["prompt_id"], r["sample"])
            for r in sorted(
                (r for r in records if search.lower() in r["completion"].lower() or r["prompt_id"] in prompts),
                key=lambda r: (r["step"], r["rank"], r["prompt_id"], r["sample"]),
            )
        ]
        assert total == len(page)
        return list(zip(page["step"], page["prompt_id"], page["sample"])), expected

    add(
        dict(step=1, prompt_id="a", sample=0, question="How many apples?", completion="so the total is 4"),
        dict(step=1, prompt_id="a", sample=1, question="How many apples?", completion="no idea"),
        dict(step=1, prompt_id="b", sample=0, question="Other", completion="So The Total: 5"),
    )
    store = RunStore(run_dir)
    store.refresh()
    for search in ("so the total", "APPLES"):
        got, expected = found(search)
        assert got == expected and len(got) == 2, search
    # searched once, not again: a row changed behind the store's back stays found on every later page
    store.con.execute("UPDATE rollouts SET completion = 'changed' WHERE prompt_id = 'b'")
    assert found("so the total")[0] == [(1, "a", 0), (1, "b", 0)]
    assert store.rollouts_page(search="so the total", correct=True, limit=1, start="last")[1] == 2
    # the rows that arrive are searched as they come, a matching question's prompt included
    add(
        dict(step=2, prompt_id="a", sample=0, question="How many apples?", completion="none"),
        dict(step=2, prompt_id="a", sample=1, question="How many apples?", completion="SO THE TOTAL"),
        dict(step=2, prompt_id="c", sample=0, question="Apples again", completion="x"),
    )
    store.refresh()
    assert found("so the total")[0] == [(1, "a", 0), (1, "b", 0), (2, "a", 1)]
    got, expected = found("apples")
    assert got == expected and len(got) == 5
    # a file replaced (a run restarted under the same id): its rows are searched afresh
    records.clear()
    path.write_text("")
    add(dict(step=1, prompt_id="d", sample=0, question="Q", completion="so the total"))
    store.refresh()
    for search in ("so the total", "apples"):
        got, expected = found(search)
        assert got == expected, search
    assert got == []
    # the latest SEARCHES_KEPT searches are kept; an older one is searched again when asked for
    for i in range(SEARCHES_KEPT + 3):
        found(f"word {i}")
    tables = store._query("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name LIKE 'search_%'")["n"][0]
    assert tables == 2 * SEARCHES_KEPT
    got, expected = found("so the total")
    assert got == expected == [(1, "d", 0)]
    made = store._searches_made
    assert found("So The TOTAL")[0] == [(1, "d", 0)] and store._searches_made == made  # the same search


def test_search_text_is_a_bound_parameter(fixture_run):
    store, _ = fixture_run
    assert store.rollouts_page(search="'; DROP TABLE rollouts; --")[1] == 0
    assert store.count() == 2048


def test_reward_histogram_and_categories(fixture_run):
    store, records = fixture_run
    window = [r for r in records if 2 <= r["step"] <= 6]
    hist = store.reward_histogram(2, 6)
    expected = {k: len(v) for k, v in by(window, lambda r: r["reward"]).items()}
    assert dict(zip(hist["reward"], hist["n"])) == expected
    cats = store.categories_per_step()
    for _, row in cats.iterrows():
        step = [r for r in records if r["step"] == row["step"]]
        assert (row["malformed"], row["wrong"], row["correct"]) == tuple(
            sum(category(r) == c for r in step) for c in ("malformed", "wrong", "correct")
        )
    assert cats["step"].tolist() == sorted({r["step"] for r in records})


def test_step_aggregates_and_comparison(fixture_run):
    store, records = fixture_run
    agg = store.step_aggregates()
    for _, row in agg.iterrows():
        step = [r for r in records if r["step"] == row["step"]]
        rewards = [r["reward"] for r in step]
        assert row["mean_reward"] == pytest.approx(mean(rewards))
        assert row["std_reward"] == pytest.approx(pstdev(rewards))
        assert (row["min_reward"], row["max_reward"]) == (min(rewards), max(rewards))
        assert row["accuracy"] == pytest.approx(mean(r["correct"] for r in step))
        assert row["format_rate"] == pytest.approx(mean(r["prediction"] is not None for r in step))
        assert row["mean_completion_tokens"] == pytest.approx(mean(r["completion_tokens"] for r in step))
        assert row["n"] == len(step)
    both = compare_step_aggregates({"a": store, "b": store})
    assert len(both) == 2 * len(agg) and set(both["run"]) == {"a", "b"}


def test_prompt_accuracy(fixture_run):
    store, records = fixture_run
    ids = sorted({r["prompt_id"] for r in records})[:3]
    df = store.prompt_accuracy(ids)
    picked = [r for r in records if r["prompt_id"] in ids]
    expected = {
        k: (sum(r["correct"] for r in v) / len(v), len(v))
        for k, v in by(picked, lambda r: (r["prompt_id"], r["step"])).items()
    }
    assert {(p, s): (a, n) for p, s, a, n, _, _ in df.itertuples(index=False)} == expected
    # how sure each accuracy is: its 95% Wilson interval, from the same counts
    assert [(lo, hi) for lo, hi in zip(df["low"], df["high"])] == [
        pytest.approx(wilson_interval(a * n, n)) for a, n in zip(df["accuracy"], df["n"])
    ]
    binned = store.prompt_accuracy(ids, bin=3)  # steps 1-3, 4-6, ... named after their first step
    expected = {
        k: (round(sum(r["correct"] for r in v) / len(v), 9), len(v))
        for k, v in by(picked, lambda r: (r["prompt_id"], (r["step"] - 1) // 3 * 3 + 1)).items()
    }
    assert {(p, s): (round(a, 9), n) for p, s, a, n, _, _ in binned.itertuples(index=False)} == expected


def test_leaderboards(fixture_run):
    store, records = fixture_run
    window = [r for r in records if r["step"] >= 1]
    summary = {}
    for pid, rows in by(window, lambda r: r["prompt_id"]).items():
        per_step = {s: mean(r["correct"] for r in v) for s, v in sorted(by(rows, lambda r: r["step"]).items())}
        accs = list(per_step.values())
        summary[pid] = {"change": accs[-1] - accs[0], "min": min(accs), "max": max(accs), "n": len(rows)}
    boards = {
        "most_improved": [
            p for p, s in sorted(summary.items(), key=lambda x: (-x[1]["change"], x[0])) if s["change"] > 0
        ],
        "regressed": [p for p, s in sorted(summary.items(), key=lambda x: (x[1]["change"], x[0])) if s["change"] < 0],
        "never_solved": [p for p, s in sorted(summary.items(), key=lambda x: (-x[1]["n"], x[0])) if s["max"] == 0],
        "always_solved": [p for p, s in sorted(summary.items(), key=lambda x: (-x[1]["n"], x[0])) if s["min"] == 1],
    }
    assert boards["most_improved"] and boards["regressed"] and boards["never_solved"]  # the fixture has each kind
    for board, expected in boards.items():
        got = store.leaderboard(board, step_min=1, limit=1000)
        assert got["prompt_id"].tolist() == expected, board
    with pytest.raises(ValueError, match="board must be one of"):
        store.leaderboard("1=1; --")
    counts = {pid: s["n"] for pid, s in summary.items()}
    floor = sorted(counts.values())[len(counts) // 2]  # the minimum-samples filter drops the rarely seen half
    got = store.leaderboard("most_changed", step_min=1, limit=1000, min_samples=floor)
    assert set(got["prompt_id"]) == {p for p, n in counts.items() if n >= floor} and len(got) < len(counts)
    row = got.iloc[0]
    assert row["correct"] == sum(r["correct"] for r in window if r["prompt_id"] == row["prompt_id"])


def test_wilson_interval():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == 1.0 and wilson_interval(0, 0) == (0, 1)
    low, high = wilson_interval(50, 100)
    assert high - low < wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]  # more samples, surer


def test_group_view_with_advantages(fixture_run):
    store, records = fixture_run
    pid, step = records[0]["prompt_id"], records[0]["step"]
    group = [r for r in records if r["prompt_id"] == pid and r["step"] == step]
    assert len(group) == 8  # K samples over both ranks
    rewards = [r["reward"] for r in sorted(group, key=lambda r: r["sample"])]
    df = store.group(pid, step)
    assert df["sample"].tolist() == list(range(8)) and df["reward"].tolist() == rewards
    expected = [(x - mean(rewards)) / (stdev(rewards) + 1e-4) for x in rewards]
    assert df["advantage"].tolist() == pytest.approx(expected)
    # the run's scale_rewards: the step's whole batch gives the std (batch), or no std at all (none)
    batch = [r["reward"] for r in records if r["step"] == step]
    for setting, std in (("batch", stdev(batch) + 1e-4), ("none", 1.0)):
        df = store.group(pid, step, run_settings({"grpo": {"scale_rewards": setting}}))
        assert df["advantage"].tolist() == pytest.approx([(x - mean(rewards)) / std for x in rewards])
    # normalize_then_sum: each function's value (the `rewards` map) normalised in its group, then over the batch
    by_group = defaultdict(list)
    for r in sorted((r for r in records if r["step"] == step), key=lambda r: (r["prompt_id"], r["sample"])):
        by_group[r["prompt_id"]].append(r["rewards"]["gsm8k"])
    scores = {p: [(v - mean(vs)) / (stdev(vs) + 1e-4) for v in vs] for p, vs in by_group.items()}
    every = [z for zs in scores.values() for z in zs]
    df = store.group(
        pid,
        step,
        run_settings(
            {
                "grpo": {"multi_objective_aggregation": "normalize_then_sum"},
                "rewards": [{"name": "gsm8k", "weight": 1.0}],
            }
        ),
    )
    assert df["advantage"].tolist() == pytest.approx([(z - mean(every)) / (stdev(every) + 1e-4) for z in scores[pid]])
    assert store.prompt_steps(pid) == sorted({r["step"] for r in records if r["prompt_id"] == pid})
    one = store.rollout(pid, step, 3)
    assert one["completion"] == next(r["completion"] for r in group if r["sample"] == 3)
    assert one["prompt"] == group[0]["prompt"]  # kept once per group, found for every sample


def test_a_sample_no_reward_scored_is_left_out_of_its_groups_advantage_as_in_trl(run_dir):
    rewards = [1.0, None, 0.0, 1.0]  # sample 1: every reward function returned None (TRL's NaN)
    append(
        run_dir / "rollouts" / "rollouts.jsonl",
        "".join(line(step=1, sample=i, reward=r, rewards={"gsm8k": r}) for i, r in enumerate(rewards)),
    )
    store = RunStore(run_dir)
    store.refresh()
    there = [1.0, 0.0, 1.0]
    expected = [(r - mean(there)) / (stdev(there) + 1e-4) if r is not None else 0.0 for r in rewards]
    assert expected == pytest.approx([0.5773, 0.0, -1.1545, 0.5773], abs=1e-4)  # TRL's, worked out by hand
    assert store.group(RECORD["prompt_id"], 1)["advantage"].tolist() == pytest.approx(expected)
    z = [a for a in expected if a]  # normalize_then_sum: those scores normalised again over the batch's scored
    settings = run_settings(
        {"grpo": {"multi_objective_aggregation": "normalize_then_sum"}, "rewards": [{"name": "gsm8k"}]}
    )
    assert store.group(RECORD["prompt_id"], 1, settings)["advantage"].tolist() == pytest.approx(
        [(a - mean(z)) / (stdev(z) + 1e-4) if a else 0.0 for a in expected]
    )
    _, facts = store.worked_step(RECORD["prompt_id"], 1, run_settings({}))
    assert facts["group_mean"] == pytest.approx(2 / 3) and facts["group_std"] == pytest.approx(stdev(there))
    offered = store.reward_histogram()["reward"].tolist()  # the Rollouts page's reward filter: no reward too
    assert sorted(r for r in offered if r == r) == [0.0, 1.0] and len(offered) == 3
    nan = next(r for r in offered if r != r)
    assert store.rollouts_page(rewards=[nan])[1] == 1 and store.rollouts_page(rewards=[nan, 1.0])[1] == 3


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo", "luspo", "cispo"])
def test_one_step_worked_through_matches_plain_python(fixture_run, scale_rewards, loss_type):
    store, records = fixture_run
    pid, step = records[5]["prompt_id"], records[5]["step"]
    batch = [r for r in records if r["step"] == step]
    group = sorted((r for r in batch if r["prompt_id"] == pid), key=lambda r: r["sample"])
    rewards = [r["reward"] for r in group]
    settings = run_settings({"grpo": {"scale_rewards": scale_rewards, "loss_type": loss_type}, "max_new_tokens": 300})
    worked, facts = store.worked_step(pid, step, settings)
    assert facts["group_mean"] == pytest.approx(mean(rewards)) and facts["group_std"] == pytest.approx(stdev(rewards))
    assert facts["batch_std"] == pytest.approx(stdev([r["reward"] for r in batch]))
    samples, tokens = len(batch), sum(r["completion_tokens"] for r in batch)
    assert (facts["samples"], facts["tokens"]) == (samples, tokens)
    std = {"group": stdev(rewards) + 1e-4, "batch": stdev([r["reward"] for r in batch]) + 1e-4, "none": 1.0}[
        scale_rewards
    ]
    advantage = [(x - mean(rewards)) / std for x in rewards]
    weight = {
        "grpo": [1 / (r["completion_tokens"] * samples) for r in group],
        "dapo": [1 / tokens] * len(group),
        "bnpo": [1 / tokens] * len(group),
        "dr_grpo": [1 / (samples * 300)] * len(group),
        "luspo": [1 / samples] * len(group),
        "cispo": [0.2 / tokens] * len(group),
    }[loss_type]  # clipped at epsilon
    assert worked["advantage"].tolist() == pytest.approx(advantage)
    assert worked["token_weight"].tolist() == pytest.approx(weight)
    assert worked["push"].tolist() == pytest.approx([a * w for a, w in zip(advantage, weight)])
    assert worked["rewards"].tolist() == [r["rewards"] for r in group]
    assert facts["metrics"] == {"loss": pytest.approx(0.5 / step)}  # what TRL logged for the step
    # the same batch split into 2 optimizer steps (steps_per_generation over gradient_accumulation_steps):
    # TRL's loss divides by one step's share, so each push is twice as large, and a step had half the batch
    split = {"train": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}}
    settings = run_settings(
        {
            **split,
            "grpo": {"scale_rewards": scale_rewards, "loss_type": loss_type, "steps_per_generation": 4},
            "max_new_tokens": 300,
        }
    )
    assert settings["steps_per_batch"] == 2
    twice, half = store.worked_step(pid, step, settings)
    assert twice["push"].tolist() == pytest.approx([2 * a * w for a, w in zip(advantage, weight)])
    assert (half["samples"], half["tokens"]) == (samples / 2, tokens / 2)


def test_prompt_visits_number_each_prompts_steps_in_order(fixture_run):
    store, records = fixture_run
    pids = sorted({r["prompt_id"] for r in records})[:3]
    got = store.prompt_visits(pids)
    for pid in pids:
        steps = sorted({r["step"] for r in records if r["prompt_id"] == pid})
        mine = got[got["prompt_id"] == pid]
        assert mine["visit"].tolist() == list(range(1, len(steps) + 1)) and mine["step"].tolist() == steps
        for step, accuracy in zip(steps, mine["accuracy"]):
            at = [r["correct"] for r in records if r["prompt_id"] == pid and r["step"] == step]
            assert accuracy == pytest.approx(sum(at) / len(at))


def test_eval_flips_and_summary(fixture_run):
    store, _ = fixture_run
    flips = store.eval_flips()
    assert list(zip(flips["prompt_id"], flips["flip"])) == [("e2", "wrong → right"), ("e0", "right → wrong")]
    assert flips.loc[0, "before_completion"] == "before 2" and flips.loc[0, "after_completion"] == "after 2"
    assert (flips.loc[0, "before_tokens"], flips.loc[0, "after_tokens"]) == (12, 12)
    summary = store.eval_summary().set_index("phase")
    assert summary.loc["before", "accuracy"] == 0.5 and summary.loc["after", "mean_completion_tokens"] == 11.5
    assert summary.loc["full_test", "accuracy"] == 0.75 and len(summary) == 3
    assert summary.loc["full_test", "mean_completion_tokens"] == 11.5  # read under the old names too
    rows = store._query("SELECT * EXCLUDE (phase) FROM eval WHERE phase = 'full_test' ORDER BY prompt_id")
    assert list(rows.columns) == list(EVAL_FIELDS) and rows["prediction"].tolist() == ["1", "1", "1", "2"]


def test_length_by_category(fixture_run):
    store, records = fixture_run
    df = store.length_by_category(bin=50)
    expected = {k: len(v) for k, v in by(records, lambda r: (category(r), r["completion_tokens"] // 50 * 50)).items()}
    assert {(c, t): n for c, t, n in df.itertuples(index=False)} == expected
    lengths = [r["completion_tokens"] for r in records]
    assert store.length_bin() == max(1, -(-(max(lengths) - min(lengths) + 1) // 30))  # at most 30 bins
    window = [r["completion_tokens"] for r in records if r["step"] == 3]
    assert store.length_bin(3, 3, bins=1000) == 1 and store.length_bin(3, 3, bins=1) == max(window) - min(window) + 1
    assert store.length_bin(10**6, None) == 1  # an empty window


@pytest.mark.parametrize("corrupt", [False, True])  # DuckDB's reader, and the line-by-line path
def test_per_reward_values_are_kept(run_dir, corrupt):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    append(path, line(rewards={"gsm8k": 1.0, "format": 0.5}) + ("oops\n" if corrupt else "") + line(sample=1))
    store = RunStore(run_dir)
    store.refresh()
    assert store.skipped == int(corrupt)
    rows = store._query("SELECT sample, rewards['format'] AS fmt FROM rollouts ORDER BY sample")
    assert rows["fmt"].tolist()[0] == 0.5 and rows["fmt"].isna().tolist()[1]  # older records have none
    assert store.rollout("p", 0, 0)["rewards"] == {"gsm8k": 1.0, "format": 0.5}


def test_a_resumed_run_shows_only_the_latest_attempt_of_each_step(run_dir):
    path = run_dir / "rollouts" / "rollouts.jsonl"
    # attempt 1 was killed after scoring step 9 (its last checkpoint: step 8); attempt 2 resumed there
    append(path, "".join(line(step=s, sample=k, attempt=1, completion=f"a1 {s}") for s in range(10) for k in range(2)))
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0, "attempt": 1}) + "\n" for s in range(1, 11))
    )
    store = RunStore(run_dir)
    store.refresh()
    assert store.count() == 20
    append(
        path, "".join(line(step=s, sample=k, attempt=2, completion=f"a2 {s}") for s in range(8, 12) for k in range(2))
    )
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps({"step": s, "loss": 2.0, "attempt": 2}) + "\n" for s in range(9, 13))
    store.refresh()
    rows = store._query("SELECT step, sample, completion FROM rollouts ORDER BY step, sample")
    assert rows["step"].tolist() == [s for s in range(12) for _ in range(2)]  # one row per (step, sample)
    assert set(rows[rows["step"] >= 8]["completion"].str[:2]) == {"a2"}
    assert set(rows[rows["step"] < 8]["completion"].str[:2]) == {"a1"}
    series = store.metric_series(["loss"])
    assert series["step"].tolist() == list(range(1, 13))
    assert series["value"].tolist() == [1.0] * 8 + [2.0] * 4
