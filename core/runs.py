"""Run directories: the status file every run keeps, written atomically, read by anyone.

`status.json` holds state (starting, running, finished, failed, stopped), pid, started_at,
ended_at, exit_code, error, global_step and max_steps (DESIGN.md, "Run directory contract").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STATES = ("starting", "running", "finished", "failed", "stopped")


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_status(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def update_status(run_dir: str | Path, **fields) -> dict:
    """Merge `fields` into status.json and write it back atomically."""
    status = {**read_status(run_dir), **fields}
    assert status.get("state") in STATES, status.get("state")
    write_json_atomic(Path(run_dir) / "status.json", status)
    return status
