"""The built-in models (`model_name: builtin:<name>`) and the cache where they, and converted GGUF
files, are kept: each is made on this machine the first time it is used, then loaded from there as
an ordinary model folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# model_name -> "module:function" that builds (or finds in its cache) the model folder and returns its path.
BUILTIN_MODELS = {
    "builtin:tiny": "core.tiny_model:build_tiny_model",
    "builtin:smollm2-135m": "core.gguf_model:build_smollm2",
}


def cache_root() -> Path:
    """Where built-in and converted models are kept: $SIMPLE_GRPO_CACHE, else ~/.cache/simple_grpo."""
    return Path(os.environ.get("SIMPLE_GRPO_CACHE") or Path.home() / ".cache" / "simple_grpo")


def save_model_folder(folder: Path, model, tokenizer) -> Path:
    """Write `model` and `tokenizer` as model folder `folder`, atomically: runs side by side that build
    the same folder at once either win the rename or find it complete."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
