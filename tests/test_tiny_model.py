"""The pinned build of builtin:tiny gives the same bytes whatever instruction set MKL is told to use (AVX2 or
AVX-512) on a given machine (core/tiny_model.py: an Intel and an AMD machine still built different bytes)."""

import hashlib
import os
import subprocess
import sys

import pytest

from core.tiny_model import PINNED_KERNELS
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BUILD = "import sys; from pathlib import Path; from core.tiny_model import build_here; build_here(Path(sys.argv[1]), warm_steps=10)"


def build(folder, **env) -> str:
    """md5 of the weights a 10-step build writes into `folder` under `env`. Kernels that round differently
    do so from the first step on, and the weights keep the difference: on the AMD machine, PyTorch's plain
    kernels against its AVX2 ones gave different bytes at 10 steps (docs/measured.md, "The tiny model")."""
    subprocess.run(
        [sys.executable, "-c", BUILD, str(folder)], cwd=ROOT, check=True, timeout=600, env={**os.environ, **env}
    )
    return hashlib.md5((folder / "model.safetensors").read_bytes()).hexdigest()


def test_the_pinned_build_gives_the_same_bytes_whatever_instruction_set_mkl_is_told(tmp_path):
    # MKL_ENABLE_INSTRUCTIONS makes MKL behave as on a CPU without AVX-512 (on one without it, both
    # builds take the AVX2 path). Left unpinned, the two builds differ in their last bits.
    avx512 = build(tmp_path / "avx512", **PINNED_KERNELS, MKL_ENABLE_INSTRUCTIONS="AVX512")
    avx2 = build(tmp_path / "avx2", **PINNED_KERNELS, MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert avx512 == avx2
