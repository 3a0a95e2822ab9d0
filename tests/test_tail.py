"""The one JSON-lines tail reader (core/tail.py), and the store and runs readers built on it."""

import json

from core.runs import log_tail, run_info
from core.store import RunStore
from core.tail import Tail, last_lines, read_jsonl


def lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_complete_lines_once_and_a_half_line_waits(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = Tail(path)
    assert tail.read_records() == (False, [], 0)  # not there yet
    path.write_text(lines({"a": 1}) + '{"a": ')
    assert tail.read_records() == (False, [{"a": 1}], 0)
    with open(path, "a") as f:
        f.write("2}\r\n" + "not json\n" + "[1, 2]\n\n")  # \r\n is a line end; a list is not a record
    assert tail.read_records() == (False, [{"a": 2}], 2)
    assert tail.read_records() == (False, [], 0)


def test_a_file_replaced_by_a_larger_one_is_read_again(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(lines({"run": 1, "step": 1}))
    tail = Tail(path)
    assert tail.read_records()[1] == [{"run": 1, "step": 1}]
    new = tmp_path / "new.jsonl"
    new.write_text(lines(*({"run": 2, "step": s} for s in range(1, 4))))  # another run's file, larger
    new.replace(path)
    replaced, records, _ = tail.read_records()
    assert replaced and [r["run"] for r in records] == [2, 2, 2]  # from its start, not from the old offset
    # replaced by a file that begins the same (a first line longer than the bytes compared) but goes on
    # differently: only the new inode tells
    first = {"run": 4, "note": "x" * 300}
    path.write_text(lines(first, {"run": 4, "step": 1}))
    tail.read_records()
    new.write_text(lines(first, {"run": 5, "step": 1}, {"run": 5, "step": 2}))
    new.replace(path)
    replaced, records, bad = tail.read_records()
    assert replaced and [r["run"] for r in records] == [4, 5, 5] and bad == 0
    # rewritten in place (same inode) with other first bytes
    path.write_text(lines(*({"run": 3, "step": s} for s in range(1, 9))))
    replaced, records, _ = tail.read_records()
    assert replaced and {r["run"] for r in records} == {3} and len(records) == 8


def test_read_jsonl_and_last_lines(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(lines({"a": 1}, {"a": 2}) + "oops\n" + '{"a": 3')
    assert read_jsonl(path) == ([{"a": 1}, {"a": 2}], 1)
    assert last_lines(path, 1000) == ['{"a": 1}', '{"a": 2}', "oops"]
    assert last_lines(path, 12) == ["oops"]  # never a line cut at its start
    assert last_lines(path, 12, partial=True) == ["oops", '{"a": 3']
    assert last_lines(tmp_path / "missing") == []


def test_the_store_follows_replaced_and_removed_metrics_and_eval_files(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "metrics.jsonl").write_text(lines({"step": 1, "time": 1.0, "loss": 9.0}))
    (tmp_path / "eval" / "again.jsonl").write_text(lines({"prompt_id": "e", "correct": True, "completion_tokens": 3}))
    store = RunStore(tmp_path)
    store.refresh()
    new = tmp_path / "new.jsonl"
    new.write_text(lines(*({"step": s, "time": 1.0, "loss": 0.5} for s in range(1, 4))))
    new.replace(tmp_path / "metrics.jsonl")  # a new run under the same folder, with a longer file
    (tmp_path / "eval" / "again.jsonl").unlink()
    store.refresh()
    series = store.metric_series(["loss"])
    assert series["step"].tolist() == [1, 2, 3] and series["value"].tolist() == [0.5] * 3
    assert store.eval_summary().empty


def test_runs_read_the_last_metric_and_the_log_tail(tmp_path):
    (tmp_path / "run.yaml").write_text("model_name: builtin:tiny\n")
    (tmp_path / "metrics.jsonl").write_text(lines({"step": 1, "reward": 0.25}, {"step": 2, "loss": 1.0}) + '{"rew')
    (tmp_path / "train.log").write_text("starting\nstep 1\n 40%|####      | 2/5")
    assert run_info(tmp_path)["reward"] == 0.25  # the latest logged reward; the half line is not read
    assert log_tail(tmp_path).splitlines() == ["starting", "step 1", " 40%|####      | 2/5"]
    # as a terminal shows it: a progress bar's last state, without the states it wrote over or its cursor moves
    (tmp_path / "train.log").write_text(
        "starting\n\r 20%|##        | 1/5\r 40%|####      | 2/5\nshards:   0%|\x1b[A\rshards: 100%|\n"
        "\r                    \r{'train_loss': 0.1}\n\nphase: saving\n\r 60%|######    | 3/5"
    )
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\r\n{"step": 2, "loss": 1.0}\r\n')
    assert run_info(tmp_path)["reward"] == 0.5  # a file written with CRLF line ends reads the same
    assert last_lines(tmp_path / "metrics.jsonl") == ['{"step": 1, "reward": 0.5}\r', '{"step": 2, "loss": 1.0}\r']
    assert log_tail(tmp_path).split("\n") == [
        "starting",
        " 40%|####      | 2/5",
        "shards: 100%|",
        "{'train_loss': 0.1}",
        "",
        "phase: saving",
        " 60%|######    | 3/5",
    ]
