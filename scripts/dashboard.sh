#!/usr/bin/env bash
# Set up (a .venv in the repo, see scripts/setup.sh) and start the dashboard on http://127.0.0.1:8501.
# Extra arguments go to `streamlit run` (e.g. --server.port 8600). Runs live in RUNS_DIR (default ./runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python -m streamlit run dashboard/app.py "$@"
