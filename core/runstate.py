"""A run's process as its folder records it: status.json, written whole by the trainer that owns it
(StatusFile, update_status); the folder's lock, one writer at a time (lock_run_dir, is_locked); and
whether the pid a status names is still the run's own (run_process, effective_state). The runtime layer:
core/lifecycle.py (the trainer's side) and core/runs.py (the dashboard's) use it; the learning path
does not.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from core.rundir import NUMBER, checked_status, lock_path, status_path, write_json_atomic

LIVE_STATES = ("starting", "running")


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def process_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since the machine booted (Linux's /proc/<pid>/stat):
    unlike a time of day, which each process works out from the boot time it read once, a step of the
    system clock (a virtual machine catching up) does not move it. None where there is no /proc or no
    such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the name in parentheses
    except (OSError, ValueError, IndexError):
        return None


def process_identity(pid: int) -> dict:
    """What status.json records to prove a pid is still its run's process later: its start as a time of
    day (for readers) and in ticks since boot (the proof, where the system has them)."""
    return {"pid": pid, "pid_started": process_started(pid), "pid_ticks": process_ticks(pid)}


class StatusFile:
    """The trainer's status.json. The trainer owns it: it keeps the status in memory and rewrites
    the whole file (atomically) on every change, so a file damaged on disk is simply replaced."""

    def __init__(self, run_dir: str | Path, **fields):
        self.path = status_path(run_dir)
        self.fields = {**fields, **process_identity(os.getpid())}
        self.update()

    def update(self, **fields) -> None:
        self.fields.update(fields)
        write_json_atomic(self.path, self.fields)


def update_status(run_dir: str | Path, **fields) -> dict:
    """Merge `fields` into status.json (a damaged one is replaced) and write it back atomically."""
    status = {**checked_status(run_dir)[0], **fields}
    write_json_atomic(status_path(run_dir), status)
    return status


def _flock(fd: int, mode: int, wait: float) -> bool:
    """Take lock `mode` (fcntl.LOCK_EX or LOCK_SH) on `fd`, trying for up to `wait` seconds."""
    deadline = time.time() + wait
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.time() >= deadline:
                return False
            time.sleep(0.05)


def lock_run_dir(run_dir: str | Path, wait: float = 1.0) -> int | None:
    """Take the run directory's exclusive lock and return its file descriptor (the lock lasts as
    long as the descriptor is open, across an exec too); None when another process holds it (a
    reader's brief look, is_locked, is over well within `wait`)."""
    fd = os.open(lock_path(run_dir), os.O_RDWR | os.O_CREAT, 0o644)
    if _flock(fd, fcntl.LOCK_EX, wait):
        return fd
    os.close(fd)
    return None


def is_locked(run_dir: str | Path, wait: float = 0.0) -> bool:
    """Whether a live trainer holds the run directory's lock (after waiting up to `wait` seconds
    for it to let go: a trainer that wrote its final state is about to exit)."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return not _flock(fd, fcntl.LOCK_SH, wait)
    finally:
        os.close(fd)  # and with it our shared lock


def run_process(status: dict) -> int | None:
    """The pid of the run's own live process, or None. A pid is trusted only when it is above 1 and
    that process started when status.json says it did (to the tick since boot, or to a second of the
    time of day where it records no ticks): a pid the system has given to another process since is
    never signalled (nor 0, -1 or a process group, which would reach others)."""
    pid, started, ticks = status.get("pid"), status.get("pid_started"), status.get("pid_ticks")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap our own finished children (else they linger as zombies)
        if done:
            return None
    except (ChildProcessError, OverflowError):
        pass  # not our child
    if isinstance(ticks, int) and not isinstance(ticks, bool) and (now := process_ticks(pid)) is not None:
        return pid if now == ticks else None  # however the system clock moved since
    actual = process_started(pid)
    if actual is None or not isinstance(started, NUMBER) or isinstance(started, bool) or abs(actual - started) > 1:
        return None
    return pid


def effective_state(status: dict) -> str:
    """The state to show: a run whose own process is gone without a final state has crashed."""
    state = status.get("state", "unknown")
    if state in LIVE_STATES and run_process(status) is None:
        return "crashed"
    return state
