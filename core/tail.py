"""Follow append-only JSON-lines files (rollouts, metrics, evals, logs) as their writers grow them.

    tail = Tail(path)
    replaced, records, bad = tail.read_records()   # what was appended since the last call

Complete lines only: a half-written last line waits for its newline. Each line is read once. A
file that shrank, or was replaced by another (a new inode, or other first bytes), is read again
from the start, and `replaced` tells the caller to drop what it had from it. A line that is not a
JSON object is skipped and counted in `bad`; `\\r\\n` endings are fine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HEAD_BYTES = 256  # a file's first bytes, compared on every read to notice a file replaced by another
BLOCK = 1 << 16


def complete_end(f, start: int, size: int) -> int:
    """Offset just after the last newline in bytes [start, size) of open file `f`, or `start` when there is none."""
    pos = size
    while pos > start:
        block = max(start, pos - BLOCK)
        f.seek(block)
        index = f.read(pos - block).rfind(b"\n")
        if index >= 0:
            return block + index + 1
        pos = block
    return start


def parse_lines(data: bytes) -> tuple[list[dict], int]:
    """(the JSON objects among the lines of `data`, how many non-blank lines were not one)."""
    records, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


class Tail:
    """One file's read position: the bytes read so far, and the inode and first bytes they came from."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0  # always just after a newline
        self.inode = -1
        self.head = b""

    def advance(self, f) -> tuple[bool, int, int]:
        """For this tail's file, open as `f`: (replaced, start, end). `replaced`: the file is not the
        one read so far (it shrank, or its inode or first bytes changed), so what was read from it no
        longer stands. [start, end): the complete lines not read yet. The position moves to `end`."""
        stat = os.fstat(f.fileno())
        f.seek(0)
        head = f.read(HEAD_BYTES)
        replaced = self.offset > 0 and (
            stat.st_ino != self.inode or stat.st_size < self.offset or head[: len(self.head)] != self.head
        )
        if replaced:
            self.offset = 0
        self.inode, self.head = stat.st_ino, head
        start = self.offset
        self.offset = complete_end(f, start, stat.st_size)
        return replaced, start, self.offset

    def read(self) -> tuple[bool, bytes]:
        """(replaced, the complete lines appended since the last read); (False, b"") while the file is missing."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False, b""
        with f:
            replaced, start, end = self.advance(f)
            f.seek(start)
            return replaced, f.read(end - start)

    def read_records(self) -> tuple[bool, list[dict], int]:
        """(replaced, the new lines' JSON objects, how many new lines were not one)."""
        replaced, data = self.read()
        return (replaced, *parse_lines(data))


def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """A whole JSON-lines file, once: (its complete lines' JSON objects, how many lines were not one)."""
    _, records, bad = Tail(path).read_records()
    return records, bad


def last_lines(path: str | Path, nbytes: int = 65536, partial: bool = False) -> list[str]:
    """The complete lines within the last `nbytes` bytes of a text file ([] while it is missing);
    with `partial`, also a last line still being written (a log's progress bar)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - nbytes)
        end = size if partial else complete_end(f, start, size)
        f.seek(max(0, start - 1))
        cut = start > 0 and f.read(1) != b"\n"  # the first line began before `start`
        lines = f.read(end - start).decode("utf-8", "replace").split("\n")  # a file's own lines: \r is no end
    if lines[-1] == "":  # the text after the last newline: none
        lines.pop()
    return lines[1:] if cut else lines
