"""Speed of the training and eval paths: on a CUDA GPU with a randomly initialised model of
Qwen2.5-0.5B-Instruct's architecture (speed depends on shapes, not weights), else on the CPU with
the built-in tiny model.

    python -m tests.benchmarks.bench_gpu [--steps 5] [--eval-questions N]

Prints GRPO step time and generated tokens/s at configs/gpu.yaml's settings with transformers'
generate (and with vLLM colocate when CUDA and vllm are there), and eval throughput batched vs one
question at a time (and with eval.backend=vllm). Measured figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import REPO as ROOT


def qwen_shaped_model(folder: Path) -> Path:
    """Random weights in Qwen2.5-0.5B-Instruct's shapes, with the tiny tokenizer padded to its vocabulary."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from core.tiny_model import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    tokenizer.add_tokens([f"<pad{i}>" for i in range(151936 - len(tokenizer))])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def grpo_speed(model: str, out: Path, steps: int, extra: list[str]) -> dict:
    """Train `steps` steps at configs/gpu.yaml's settings; median step time and tokens/s."""
    sets = [
        f"model_name={model}",
        "dataset.name=synthetic",
        f"train.num_train_steps={steps}",
        "eval.enabled=false",
        "runtime.use_wandb=false",
        "train.save_steps=0",
        f"train.output_dir={out}",
        *extra,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "core.train", "--config", "configs/gpu.yaml", *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    logs = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "step_time" in m]
    later = logs[1:] or logs  # the first step includes warm-up
    tokens = [b["num_tokens"] - a["num_tokens"] for a, b in zip(logs, logs[1:])] or [logs[0]["num_tokens"]]
    step_time = statistics.median(m["step_time"] for m in later)
    return {"step_time": step_time, "tokens_per_s": statistics.median(tokens) / step_time}


def eval_speed(model_dir: str, questions: int, with_vllm: bool) -> dict:
    """Seconds to answer `questions` prompts batched (64 at a time), one at a time, and with
    eval.backend=vllm when `with_vllm`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.config import DatasetConfig
    from core.data import load_rows, to_dataset
    from core.evaluate import evaluate, generate_vllm
    from core.model import pick_device

    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
    shared = ROOT.parent / "shared" / "data" / "gsm8k"
    source = (
        DatasetConfig(path=str(shared), n_train=1, n_eval=questions)
        if shared.is_dir()
        else DatasetConfig(name="synthetic", n_train=1, n_eval=questions)
    )
    dataset = to_dataset(load_rows(source, seed=0)[1], tokenizer)
    seconds = {}
    for batch in (64, 1):
        start = time.perf_counter()
        evaluate(model, tokenizer, dataset, batch_size=batch, max_new_tokens=256)
        seconds[batch] = time.perf_counter() - start
    if with_vllm:
        start = time.perf_counter()  # engine start-up included: an eval pays it every time
        generate_vllm(model_dir, tokenizer, dataset["prompt"], 256, 0.0, 1.0, gpu_memory_utilization=0.5, seed=0)
        seconds["vllm"] = time.perf_counter() - start
    return {"n": len(dataset), "batched": seconds[64], "single": seconds[1], "vllm": seconds.get("vllm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-questions", type=int, help="default: 1319 on a GPU, 128 on the CPU")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if cuda:
            model = str(qwen_shaped_model(tmp / "qwen-shaped"))
            print(f"device: {torch.cuda.get_device_name()}; model: random Qwen2.5-0.5B-Instruct shapes, bf16")
        else:
            from core.tiny_model import build_tiny_model

            model = str(build_tiny_model())
            print("device: CPU (no CUDA); model: builtin:tiny")
        hf = grpo_speed(model, tmp / "hf", args.steps, [])
        print(f"GRPO step, transformers generate: {hf['step_time']:.2f} s/step, {hf['tokens_per_s']:,.0f} tokens/s")
        try:
            import vllm  # noqa: F401

            has_vllm = True
        except ImportError:
            has_vllm = False
        if cuda and has_vllm:
            v = grpo_speed(model, tmp / "vllm", args.steps, ["grpo.use_vllm=true", "grpo.vllm_mode=colocate"])
            print(
                f"GRPO step, vLLM colocate:         {v['step_time']:.2f} s/step, {v['tokens_per_s']:,.0f} tokens/s "
                f"({hf['step_time'] / v['step_time']:.1f}x faster)"
            )
        else:
            print("GRPO step, vLLM colocate: skipped (needs CUDA and `pip install -r requirements-vllm.txt`)")
        e = eval_speed(model, args.eval_questions or (1319 if cuda else 128), cuda and has_vllm)
        print(
            f"eval of {e['n']} questions: batched (64) {e['batched']:.1f} s ({e['n'] / e['batched']:.1f} q/s), "
            f"one at a time {e['single']:.1f} s ({e['n'] / e['single']:.1f} q/s): "
            f"{e['single'] / e['batched']:.1f}x faster batched"
        )
        if e["vllm"]:
            print(
                f"eval with vLLM: {e['vllm']:.1f} s including engine start ({e['batched'] / e['vllm']:.1f}x "
                "faster than hf batched)"
            )


if __name__ == "__main__":
    main()
