#!/usr/bin/env bash
# Set up (a .venv in the repo, see scripts/setup.sh) and run the test suite. Extra arguments go to pytest
# (`-n 0`: one process, no workers). Two workers, a test file each at a time: much of a slow test is spent
# waiting (for a page's refresh, a process's start, a browser), which the other worker fills; each
# gets its share of the cores for PyTorch (tests/conftest.py), and the longest files start first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
