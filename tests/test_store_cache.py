"""The store's cache (core/store/cache.py): a store opened again takes up where the last one left off,
reading only what was appended since; and every fault (a store killed mid-refresh, a cache of another
version, torn or garbage, a folder moved or deleted, a second process, a full disk) ends in the right
rows, rebuilt or read into memory with a one-line note."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import duckdb
import pytest

from core.rundir import rollouts_path, store_cache_path
from core.store import RunStore
from core.store import cache as store_cache
from tests.conftest import ROOT
from tests.fake_run import write_run

ROWS = 2_000


def rows(store) -> list[tuple]:
    """Every rollout the store holds, as the pages see them: sorted, one tuple each."""
    return sorted(
        store._query("SELECT step, prompt_id, rank, sample, completion, reward FROM rollouts").itertuples(index=False)
    )


def truth(run_dir) -> list[tuple]:
    """The same from the files alone, by a store in memory."""
    store = RunStore(run_dir, cached=False)
    store.refresh()
    return rows(store)


def opened(run_dir) -> RunStore:
    store = RunStore(run_dir, cached=True)
    store.refresh()
    return store


@pytest.fixture
def run_dir(tmp_path):
    write_run(tmp_path / "run", ROWS)
    return tmp_path / "run"


def test_a_store_opened_again_reads_only_what_was_appended(run_dir):
    first = opened(run_dir)
    assert first.cache == store_cache_path(run_dir) and first.note is None
    before = rows(first)
    first.close()
    # lines already read are changed in place (same size, same first bytes): a store that read them
    # again would show the changed text
    path = rollouts_path(run_dir, 0)
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + data[middle:].replace(b" apples ", b" APPLES ", 50))
    write_run(run_dir, 200, start=ROWS)
    again = RunStore(run_dir)  # a run with a cache keeps it, however small
    assert again.cache == store_cache_path(run_dir) and again.note is None
    assert again.refresh() == 200  # only the new lines
    assert set(before) <= set(rows(again))
    assert not any("APPLES" in r.completion for r in rows(again))
    assert again.count() == ROWS + 200


@pytest.mark.slow  # it starts a process
def test_a_store_killed_mid_refresh_is_rebuilt(run_dir):
    """kill -9 after the rows went in and before their read positions did: reading on from the old
    positions would count those rows twice."""
    opened(run_dir).close()
    write_run(run_dir, 400, start=ROWS)
    script = textwrap.dedent(
        f"""
        import os, signal
        from core.store import RunStore
        from core.store.ingest import Ingestion
        Ingestion._refresh_records = lambda self, path: os.kill(os.getpid(), signal.SIGKILL)
        RunStore({str(run_dir)!r}, cached=True).refresh()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL
    store = opened(run_dir)
    assert store.note == "the store's cache was rebuilt: a refresh did not finish (the process was stopped)"
    assert store.count() == ROWS + 400 and rows(store) == truth(run_dir)


@pytest.mark.parametrize("damage", ["another version", "torn", "garbage"])
def test_a_cache_that_cannot_be_trusted_is_rebuilt(run_dir, damage):
    opened(run_dir).close()
    path = store_cache_path(run_dir)
    if damage == "another version":
        con = duckdb.connect(str(path))
        con.execute("UPDATE meta SET version = '0'")
        con.close()
    elif damage == "torn":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        path.write_bytes(os.urandom(40_000))
    store = opened(run_dir)
    assert store.cache == path
    assert "rebuilt" in store.note and "\n" not in store.note
    assert rows(store) == truth(run_dir) and store.count() == ROWS
    store.close()
    assert opened(run_dir).note is None  # and it is trusted again


def test_a_moved_run_keeps_its_cache(run_dir, tmp_path):
    opened(run_dir).close()
    moved = tmp_path / "renamed"
    run_dir.rename(moved)
    store = RunStore(moved, cached=True)
    assert store.refresh() == 0 and store.count() == ROWS and store.note is None
    write_run(moved, 100, start=ROWS)
    assert store.refresh() == 100
    assert rows(store) == truth(moved)


def test_a_deleted_run_takes_its_rows_and_a_new_one_in_its_place_starts_afresh(run_dir):
    import shutil

    store = opened(run_dir)
    shutil.rmtree(run_dir)
    store.refresh()
    assert store.count() == 0 and store.status == {}
    store.close()
    write_run(run_dir, 300, seed=1)
    again = opened(run_dir)
    assert again.count() == 300 and again.note is None and rows(again) == truth(run_dir)


@pytest.mark.slow  # it starts a process
def test_a_second_store_reads_into_memory_beside_the_one_that_has_the_cache(run_dir):
    """In this process (DuckDB would hand both the same database) and in another process (DuckDB lets
    one process have the file): the second store is right, in memory, and says why; the cache is whole."""
    first = opened(run_dir)
    here = opened(run_dir)
    assert here.cache is None and here.note == "this run's store is open already in this process: read into memory"
    assert rows(here) == rows(first)
    script = textwrap.dedent(
        f"""
        import json
        from core.store import RunStore
        store = RunStore({str(run_dir)!r}, cached=True)
        store.refresh()
        print(json.dumps([store.cache is None, store.note, store.count()]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert json.loads(result.stdout) == [True, "another process has this run's store open: read into memory", ROWS]
    first.close()
    here.close()
    assert opened(run_dir).note is None  # the cache is whole: nothing rebuilt


@pytest.mark.slow  # it starts a process
def test_a_full_disk_leaves_the_cache_for_memory_with_the_right_rows(run_dir):
    """The file size limit (RLIMIT_FSIZE) makes the cache's writes fail as a full disk does."""
    script = textwrap.dedent(
        f"""
        import json, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        from core.store import RunStore
        store = RunStore({str(run_dir)!r}, cached=True)
        added = store.refresh()
        print(json.dumps([store.cache is None, store.note, added, store.count()]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    in_memory, note, added, count = json.loads(result.stdout)
    assert in_memory and note.startswith("the store's cache failed (") and note.endswith("): read into memory")
    assert added == count == ROWS


def test_a_small_run_is_read_into_memory_and_a_large_one_gets_a_cache(tmp_path, monkeypatch):
    write_run(tmp_path / "run", 50)
    store = RunStore(tmp_path / "run")
    store.refresh()
    assert store.cache is None and store.note is None and store.count() == 50
    assert not store_cache_path(tmp_path / "run").parent.exists()  # nothing written
    store.close()
    size = sum(p.stat().st_size for p in (tmp_path / "run" / "rollouts").iterdir())
    monkeypatch.setattr(store_cache, "CACHE_FROM_BYTES", size)
    store = RunStore(tmp_path / "run")
    store.refresh()
    assert store.cache == store_cache_path(tmp_path / "run") and store.count() == 50


def test_the_memory_limit_is_a_setting(run_dir, monkeypatch):
    monkeypatch.setattr(store_cache, "MEMORY_LIMIT", "300MB")
    store = RunStore(run_dir, cached=True)
    limit = store.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "") in ("300.0MB", "286.1MiB")
