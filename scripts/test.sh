#!/usr/bin/env bash
# Set up (a .venv in the repo) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
