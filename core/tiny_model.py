"""`model_name: builtin:tiny` — a tiny Qwen2-architecture model built on the fly, offline.

A byte-level BPE tokenizer trained here on synthetic GSM8K-style text (digits one per token, as
Qwen does), Qwen's chat template, `<|im_end|>` as end of sequence, and a short supervised warm
start on synthetic problems answered as `<equations>\nFinal: <number>`: enough to write the
format and sometimes the right number, so GRPO has rewards to compare. Built once (minutes on a CPU:
docs/measured.md) and cached under $SIMPLE_GRPO_CACHE or ~/.cache/simple_grpo.

Left to itself, PyTorch sums floats in an order that depends on the CPU (AVX2 or AVX-512 kernels,
MKL's code path) and on the number of threads, and 420 steps of training turn a last-bit difference
into a different model, which starts the demo a few points apart (docs/measured.md). So
the build runs in a process of its own with PINNED_KERNELS, which hold it steady on a given machine
(the same bytes whatever MKL's code path), though the one Intel and the one AMD machine measured built
different bytes (measured: docs/measured.md, "The tiny model"). The demo learns from both.

    python -m core.tiny_model        # builds it and prints its folder
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from core import REPO
from core.builtin_models import cache_root, save_model_folder
from core.data import synthetic_rows
from core.prompts import SYSTEM_PROMPT, build_prompt
from core.rewards import extract_gsm8k_gt

VERSION = "tiny-v5"  # bump when the recipe changes, so stale caches are not reused
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# MKL's conditional numerical reproducibility ("compatible": by MKL's account one code path on every x86 CPU,
# yet an Intel and an AMD machine built different bytes),
# PyTorch's plain kernels rather than the AVX ones its dispatcher picks, and a fixed two threads.
PINNED_KERNELS = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}


def cache_dir() -> Path:
    return cache_root() / VERSION


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = synthetic_rows(2000, seed)
    corpus = [SYSTEM_PROMPT] * 20 + [f"{r['question']}\n{r['answer']}\nFinal: 42" for r in rows]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def short_solution(answer: str) -> str:
    """`30+28=58\n58-21=37\nFinal: 37` from a GSM8K answer's <<expr=result>> notes."""
    steps = re.findall(r"<<([^>]*)>>", answer)
    return "\n".join(steps + [f"Final: {extract_gsm8k_gt(answer)}"])


def warm_start(model, tokenizer, steps: int, seed: int, batch_size: int = 32, lr: float = 3e-3) -> list[float]:
    """Supervised fine-tuning on synthetic problems (loss on the answer tokens only); returns losses."""
    import torch

    per_level = steps * batch_size // 3 + 1  # every difficulty level, interleaved
    levels = [synthetic_rows(per_level, seed + level, level=level) for level in (1, 2, 3)]
    rows = [row for group in zip(*levels) for row in group]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / 20) * (1 - i / steps))
    tokenizer.padding_side = "right"
    losses = []
    model.train()
    for i in range(steps):
        batch = rows[i * batch_size : (i + 1) * batch_size]
        prompts = [build_prompt(tokenizer, r["question"]) for r in batch]
        texts = [p + short_solution(r["answer"]) + tokenizer.eos_token for p, r in zip(prompts, batch)]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for j, p in enumerate(prompts):
            labels[j, : len(tokenizer(p, add_special_tokens=False)["input_ids"])] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    tokenizer.padding_side = "left"
    model.eval()
    return losses


def build_tiny_model() -> Path:
    """The tiny model's folder: built on first use, in a process with PINNED_KERNELS (they are read
    when PyTorch starts, so this process, which may already run PyTorch, cannot build it itself)."""
    folder = cache_dir()
    if not ((folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()):
        subprocess.run(
            [sys.executable, "-m", "core.tiny_model", "--in-this-process"],
            check=True,
            cwd=REPO,
            env={**os.environ, **PINNED_KERNELS},
        )
    return folder


# 420 warm-start steps: the model has just begun copying the numbers of a question into its sum
# (about 30% right on single-digit additions, greedy): room for GRPO to show progress.
def build_here(folder: Path, seed: int = 0, warm_steps: int = 420) -> Path:
    """Build the tiny model into `folder` in this process (see PINNED_KERNELS)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = _train_tokenizer(seed)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    warm_start(model, tokenizer, warm_steps, seed=seed + 1000)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return save_model_folder(folder, model, tokenizer)


if __name__ == "__main__":
    if "--in-this-process" in sys.argv:  # what build_tiny_model starts
        build_here(cache_dir())
    else:
        print(build_tiny_model())
