"""Batched GSM8K evaluation: left-padded batches, one `generate` per batch, the reward's parser.

Greedy by default (temperature 0), which gives the same answers as one question at a time;
temperature > 0 samples with top_p. `evaluate` returns one record per question and a summary;
`write_eval` stores them as `eval/<phase>.jsonl` and `eval/summary.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.rewards import CORRECT, score
from core.runs import write_json_atomic


def evaluate(model, tokenizer, dataset, batch_size: int = 16, max_new_tokens: int = 256,
             temperature: float = 0.0, top_p: float = 1.0) -> tuple[list[dict], dict]:
    """Answer every row of `dataset` (columns prompt, question, answer_final, prompt_id)."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generated tokens must line up at the right edge
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    device = next(model.parameters()).device
    records = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = dataset[start: start + batch_size]
            enc = tokenizer(batch["prompt"], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id, **sampling)
            for i, new in enumerate(out[:, enc["input_ids"].shape[1]:].tolist()):
                if tokenizer.eos_token_id in new:
                    new = new[: new.index(tokenizer.eos_token_id) + 1]  # count the EOS, drop the padding
                completion = tokenizer.decode(new, skip_special_tokens=True)
                pred, reward = score(completion, batch["answer_final"][i])
                records.append({"prompt_id": batch["prompt_id"][i], "question": batch["question"][i],
                                "prompt": batch["prompt"][i], "gt": batch["answer_final"][i], "pred": pred,
                                "completion": completion, "correct": reward == CORRECT, "new_tokens": len(new)})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    n = len(records)
    summary = {"eval_accuracy": sum(r["correct"] for r in records) / n if n else 0.0,
               "eval_avg_new_tokens": sum(r["new_tokens"] for r in records) / n if n else 0.0, "n": n}
    return records, summary


def write_eval(run_dir: str | Path, phase: str, records: list[dict], summary: dict) -> None:
    """Write eval/<phase>.jsonl and merge `summary` into eval/summary.json under `phase`."""
    folder = Path(run_dir) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{phase}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    summary_path = folder / "summary.json"
    summaries = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summaries[phase] = summary
    write_json_atomic(summary_path, summaries)
