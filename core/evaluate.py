"""GSM8K evaluation: generate one answer per question, score it with the reward's parser.

Two backends give the same records: `hf` (transformers `generate` over left-padded batches) and
`vllm` (a vLLM engine on a model folder; CUDA only). Greedy by default (temperature 0), which
gives the same answers as one question at a time; temperature > 0 samples with top_p.
`write_eval` stores records as `eval/<phase>.jsonl` and the summary in `eval/summary.json`.

    python -m core.evaluate runs/<run> [--model FOLDER] [--phase NAME] [--set dataset.n_eval=1319]

evaluates a saved model (default the run's model/) on the run's eval set with the run's eval
settings; it prints the summary as JSON and, with --phase, also writes the eval files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from core.config import load_config, shards_weights
from core.data import load_rows, to_dataset
from core.errors import ConfigError
from core.model import check_vllm, load_model, load_tokenizer, pick_device
from core.rewards import CORRECT, last_number, numbers_equal, score
from core.rundir import config_path, eval_path, eval_summary_path, model_dir, read_json, replaced, write_json_atomic
from core.stop_at_final import end_at_final_line

# One eval record, a JSON line per question in eval/<phase>.jsonl: core.rundir.EVAL_FIELDS. `correct` is the
# reward's strict reading (a well-formed `Final:` line); `lenient_correct` reads the last number anywhere:
# the gap between them is what learning the format is worth.


def generate_hf(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    progress=None,
) -> list[list[int]]:
    """The new token ids for each prompt, `batch_size` prompts per `generate` call;
    `progress(done, total)` after each call."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generated tokens must line up at the right edge
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    device = next(model.parameters()).device
    outputs = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **sampling,
                )
            outputs += out[:, enc["input_ids"].shape[1] :].tolist()
            if progress is not None:
                progress(len(outputs), len(prompts))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs


def generate_vllm(
    model_dir: str,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    gpu_memory_utilization: float,
    seed: int,
) -> list[list[int]]:
    """The new token ids for each prompt from a vLLM engine on `model_dir`, which schedules all the
    prompts itself (continuous batching). The prompts go in as the same token ids hf gets."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, gpu_memory_utilization=gpu_memory_utilization, seed=seed)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p if temperature else 1.0)
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    results = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
    return [list(r.outputs[0].token_ids) for r in results]


def score_outputs(tokenizer, dataset, outputs: list[list[int]]) -> tuple[list[dict], dict]:
    """One record per question (columns prompt, question, answer_final, prompt_id) and a summary."""
    records = []
    for row, new in zip(dataset, outputs, strict=True):
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id) + 1]  # count the EOS, drop the padding
        completion = tokenizer.decode(new, skip_special_tokens=True)
        pred, reward = score(completion, row["answer_final"])
        records.append(
            {
                "prompt_id": row["prompt_id"],
                "question": row["question"],
                "prompt": row["prompt"],
                "ground_truth": row["answer_final"],
                "prediction": pred,
                "completion": completion,
                "correct": reward == CORRECT,
                "lenient_correct": numbers_equal(last_number(completion), row["answer_final"]),
                "completion_tokens": len(new),
            }
        )
    n = max(1, len(records))
    summary = {
        "eval_accuracy": sum(r["correct"] for r in records) / n,
        "eval_lenient_accuracy": sum(r["lenient_correct"] for r in records) / n,
        "eval_format_rate": sum(r["prediction"] is not None for r in records) / n,
        "eval_avg_new_tokens": sum(r["completion_tokens"] for r in records) / n,
        "n": len(records),
    }
    return records, summary


def evaluate(
    model,
    tokenizer,
    dataset,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    progress=None,
) -> tuple[list[dict], dict]:
    """Answer every row of `dataset` with the hf backend, on the model in memory."""
    outputs = generate_hf(model, tokenizer, dataset["prompt"], batch_size, max_new_tokens, temperature, top_p, progress)
    return score_outputs(tokenizer, dataset, outputs)


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (made here if missing), in words; None when they can. Asked
    before an eval, which would otherwise be lost at its end."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where the folder goes, a parent that may not be written
        return e.strerror or str(e)
    return None if os.access(folder, os.W_OK) else "no permission to write there"


def write_eval(run_dir: str | Path, phase: str, records: list[dict], summary: dict) -> None:
    """Write eval/<phase>.jsonl (atomically: readers see the old file or the new one, a new inode)
    and merge `summary` into eval/summary.json under `phase`."""
    path = eval_path(run_dir, phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    summary_path = eval_summary_path(run_dir)
    summaries = read_json(summary_path) or {}  # the trainer owns this file: a damaged one is rewritten
    summaries[phase] = summary
    write_json_atomic(summary_path, summaries)


def evaluate_run(cfg, run_dir: str | Path, model, tokenizer, eval_set, phase: str | None = None, progress=None) -> dict:
    """The run's eval of `model` as it is now; returns the summary. With `phase` (before, after) it
    also writes the eval files; without, it is an eval during training. transformers (eval.backend
    hf) evaluates in this process; vLLM, and the eval after a run whose weights are spread over the
    workers (FSDP, ZeRO-3), in a process of its own, from a model folder."""
    e = cfg.eval
    if e.backend == "hf" and not (phase == "after" and shards_weights(cfg)):
        records, summary = evaluate(
            model,
            tokenizer,
            eval_set,
            e.batch_size,
            e.max_new_tokens or cfg.max_new_tokens,
            e.temperature,
            e.top_p,
            progress,
        )
        if phase:
            write_eval(run_dir, phase, records, summary)
    elif phase == "after":  # the final weights, which the trainer has saved in model/
        summary = evaluate_in_subprocess(run_dir, model_dir(run_dir), phase)
    else:  # the weights as they are now, saved for it
        with tempfile.TemporaryDirectory(dir=run_dir) as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            summary = evaluate_in_subprocess(run_dir, folder, phase)
    print(
        f"eval {phase or 'during training'}: accuracy {summary['eval_accuracy']:.3f} (lenient "
        f"{summary['eval_lenient_accuracy']:.3f}, well-formed {summary['eval_format_rate']:.3f}) on {summary['n']} "
        f"questions, {summary['eval_avg_new_tokens']:.1f} new tokens on average",
        flush=True,
    )
    return summary


# Variables through which torchrun and accelerate make a process one rank of a group; the eval
# process must not inherit them, or it would try to join the training's group.
LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def evaluate_in_subprocess(run_dir: str | Path, model_folder: str | Path, phase: str | None = None) -> dict:
    """Evaluate the model saved in `model_folder` in a fresh process (this module's CLI), away from
    the training's GPU state and process group; returns the summary."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_ENV and not k.startswith(("TORCHELASTIC_", "ACCELERATE_"))
    }
    command = [sys.executable, "-m", "core.evaluate", str(run_dir), "--model", str(model_folder)]
    phase_args = ["--phase", phase, "--overwrite"] if phase else []  # the run's own eval: a resumed run's anew
    result = subprocess.run(command + phase_args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"evaluation of {model_folder} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory (its run.yaml names the eval set and settings)")
    parser.add_argument("--model", help="the model folder to evaluate (default: RUN_DIR/model)")
    parser.add_argument("--phase", help="also write eval/<PHASE>.jsonl and the summary under PHASE")
    parser.add_argument(
        "--overwrite", action="store_true", help="with --phase: replace the run's eval of that name where it has one"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the run's config, e.g. --set dataset.n_eval=1319",
    )
    args = parser.parse_args(argv)
    folder = args.model or str(model_dir(args.run_dir))
    try:
        if not config_path(args.run_dir).is_file():
            raise ConfigError(f"'{args.run_dir}' is not a run directory (it has no run.yaml): give one under runs/")
        cfg = load_config(config_path(args.run_dir), sets=[*args.set, f"model_name={folder}"])
        if args.phase and not args.phase.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"--phase {args.phase!r} must be a plain name such as after or full_test")
        written = eval_path(args.run_dir, args.phase) if args.phase else None
        if written and written.exists() and not args.overwrite:
            raise ConfigError(
                f"the run has an eval named {args.phase!r} already ({written}): give another --phase, or add "
                "--overwrite to replace it"
            )
        if written and (problem := unwritable(written.parent)):
            raise ConfigError(f"cannot write the eval in {written.parent} ({problem})")
        device, e = pick_device(), cfg.eval
        if e.backend == "vllm":
            check_vllm(device, "eval.backend=vllm")
        _, eval_rows = load_rows(cfg.dataset, cfg.train.seed)
        model, tokenizer = (None, load_tokenizer(cfg)) if e.backend == "vllm" else load_model(cfg, device)
        if cfg.stop_at_final:
            end_at_final_line(model, tokenizer)
        dataset = to_dataset(eval_rows, tokenizer)
        max_new_tokens = e.max_new_tokens or cfg.max_new_tokens
        if e.backend == "vllm":
            outputs = generate_vllm(
                cfg.model_name,
                tokenizer,
                dataset["prompt"],
                max_new_tokens,
                e.temperature,
                e.top_p,
                e.vllm_gpu_memory_utilization,
                cfg.train.seed,
            )
        else:
            outputs = generate_hf(
                model, tokenizer, dataset["prompt"], e.batch_size, max_new_tokens, e.temperature, e.top_p
            )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records, summary = score_outputs(tokenizer, dataset, outputs)
    if args.phase:
        write_eval(args.run_dir, args.phase, records, summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
