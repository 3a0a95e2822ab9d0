#!/usr/bin/env bash
# Set up (a .venv in the repo, see scripts/setup.sh) and run the test suite. Extra arguments go to pytest
# (`-n 0`: one process, no workers; needed for --pdb). Two workers run a test file each at a time: much
# of a slow test is spent waiting (for a page's refresh, a process's start, a browser), and the other
# worker fills that time. PyTorch's threads sleep, not spin, while they wait (OMP_WAIT_POLICY=PASSIVE),
# and the longest files start first (both in tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
