"""The device a run uses and its model and tokenizer: a Hub id, a local folder, or a built-in model.

    device = pick_device()                      # cuda, else mps, else cpu
    model, tokenizer = load_model(cfg, device)  # bf16 on CUDA, float32 elsewhere

Built-in models (`model_name: builtin:<name>`) are made on this machine the first time they are
used and cached as ordinary model folders (see BUILTIN_MODELS). A model that cannot be loaded is
a ConfigError that says what to use offline.
"""

from __future__ import annotations

import os
import socket

from core.builtin_models import BUILTIN_MODELS
from core.config import RunConfig
from core.errors import ConfigError
from core.gguf_model import convert_gguf


def pick_device() -> str:
    import torch

    if has_cuda():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_vllm(device: str, setting: str = "grpo.use_vllm=true") -> None:
    """vLLM needs CUDA and the vllm package; say so before anything is loaded."""
    if device != "cuda":
        raise ConfigError(
            f"{setting} needs an NVIDIA GPU (vLLM runs on CUDA only) and this machine has "
            f"{device}: generate with transformers instead (grpo.use_vllm=false, eval.backend=hf)"
        )
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError(f"{setting} needs vLLM: pip install -r requirements-vllm.txt") from None


def check_vllm_server(cfg: RunConfig) -> None:
    """grpo.vllm_mode=server trains against a `trl vllm-serve` that must already answer."""
    if not (cfg.grpo.get("use_vllm") and cfg.grpo.get("vllm_mode") == "server"):
        return
    host, port = cfg.grpo.get("vllm_server_host", "0.0.0.0"), int(cfg.grpo.get("vllm_server_port", 8000))
    try:
        socket.create_connection(("127.0.0.1" if host == "0.0.0.0" else host, port), timeout=3).close()
    except OSError as e:
        raise ConfigError(
            f"no vLLM server answers at {host}:{port} ({e.strerror or e}): start it first "
            "(trl vllm-serve --model <model>, on its own GPU or node), or fix grpo.vllm_server_host "
            "and grpo.vllm_server_port"
        ) from None


def check_generation(cfg: RunConfig, device: str) -> None:
    """What the run generates with (vLLM for training or eval) can run here; say so before anything loads."""
    check_vllm_server(cfg)
    if cfg.grpo.get("use_vllm"):
        check_vllm(device)
    if cfg.eval.enabled and cfg.eval.backend == "vllm":
        check_vllm(device, "eval.backend=vllm")


def model_folder(model_name: str) -> str:
    """What `from_pretrained` loads for `model_name`: a built-in model's folder (built on first
    use), a GGUF file's converted folder, else the name itself (a Hub id or a local folder)."""
    if model_name.endswith(".gguf"):
        return str(convert_gguf(model_name))
    if model_name not in BUILTIN_MODELS:
        return model_name
    import importlib

    module, _, function = BUILTIN_MODELS[model_name].partition(":")
    return str(getattr(importlib.import_module(module), function)())


def damaged_weights(folder: str | os.PathLike) -> str | None:
    """What is wrong with a model folder's safetensors files, in words, where one is cut short or is not
    one (a save that did not finish); None when each opens. Reads their headers only."""
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            return f"{path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def _from_pretrained(cls, cfg: RunConfig, **kwargs):
    """`cls.from_pretrained` on the config's model; a model that cannot be loaded is a ConfigError
    that says what to use offline."""
    try:
        return cls.from_pretrained(model_folder(cfg.model_name), **kwargs)
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"could not load model '{cfg.model_name}' ({reason}): when the Hugging Face Hub is unreachable, "
            "set model_name to a local model folder or to builtin:tiny (offline preset: configs/tiny_cpu.yaml)"
        ) from None


def load_tokenizer(cfg: RunConfig):
    """The model's tokenizer, padding on the left (for generation), with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, cfg)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: RunConfig, device: str):
    """(model, tokenizer) on `device`: bf16 with device_map="auto" on CUDA (this process's GPU
    under torchrun), float32 elsewhere."""
    import torch
    from transformers import AutoModelForCausalLM

    local_rank = int(os.environ.get("LOCAL_RANK", -1))  # set by torchrun: one GPU per process
    kwargs = (
        {"dtype": torch.bfloat16, "device_map": {"": local_rank} if local_rank >= 0 else "auto"}
        if device == "cuda"
        else {"dtype": torch.float32}
    )
    if os.path.isdir(cfg.model_name) and (damaged := damaged_weights(cfg.model_name)):  # said before anything loads
        raise ConfigError(
            f"could not load model '{cfg.model_name}': its weights are damaged ({damaged}), as a save cut short "
            "leaves them: give another model folder or checkpoint"
        )
    tokenizer = load_tokenizer(cfg)
    model = _from_pretrained(AutoModelForCausalLM, cfg, **kwargs)
    if device != "cuda":
        model.to(device)
    return model, tokenizer
