"""What training did to each token of a rollout: the token's log-probability and entropy under the
model before training and after, and the five likeliest tokens at its place.

    python -m core.tokens RUN_DIR --step S --prompt-id P --sample K [--checkpoint N|after] [--json]

This shows which tokens training moved, and how far (why they move: README, "What GRPO does
here"; a token moves with every update of the run, not only its own sample's). By default it compares
the two models the run kept nearest on either side of the sample's step (`around`), as the Rollouts
page does; with --checkpoint, the starting model and checkpoint-<N>/ or the saved model (model/).
Log-probabilities are at the run's sampling temperature, as TRL computes them for the loss.

The tokens are the ones sampled (tokens/, TRL's completion ids, end of message included); a run
written before they were recorded has its completion text tokenised again, and says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core import HEAVY_IMPORTS
from core.config import grpo_default, load_config
from core.errors import ConfigError
from core.model import model_folder
from core.rundir import TOKENS, checkpoints, config_path, model_dir, token_files
from core.store import RunStore

TOP = 5  # alternatives shown at each place
MEMORY_SHARE = 0.8  # a model may take this share of the memory free now; the rest is the page's and the trainer's


@dataclass
class TokenView:
    tokens: list[dict]  # one per completion token: token, id, logprob_/entropy_/top_ before and after
    before: str  # the models compared, as the run names them
    after: str
    recorded: bool  # the sampled ids (True), or the completion text tokenised again
    temperature: float


def model_choices(run_dir: str | Path) -> dict[str, str]:
    """What the token view can compare, label -> model: the starting model, each kept checkpoint, the
    saved model (the labels: 'before', 'checkpoint-<step>', 'after')."""
    cfg = load_config(config_path(run_dir), check=False)  # a run made on another machine is viewed as it was made
    choices = {"before": cfg.model_name}
    choices |= {path.name: str(path) for path in checkpoints(run_dir)}
    if any(
        (model_dir(run_dir) / name).is_file() for name in ("config.json", "adapter_config.json")
    ):  # LoRA: an adapter
        choices["after"] = str(model_dir(run_dir))
    return choices


def sampled_ids(run_dir: str | Path, step: int, prompt_id: str, sample: int) -> list[int] | None:
    """The token ids rollout (step, prompt_id, sample) was sampled as, of its latest attempt; None
    when the run did not record them."""
    found, needle = None, json.dumps(prompt_id)
    for path in token_files(run_dir):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if needle not in line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:  # a torn last line
                    continue
                if (
                    isinstance(r, dict)
                    and (r.get("step"), r.get("prompt_id"), r.get("sample")) == (step, prompt_id, sample)
                    and isinstance(r.get("ids"), list)
                    and all(type(i) is int for i in r["ids"])  # anything else is no record of ids: skipped
                    and (found is None or (r.get("attempt") or 0) >= found[0])
                ):
                    found = (r.get("attempt") or 0, r["ids"])
    return found[1] if found else None


def weights_folder(model: str) -> Path:
    """The local folder `model` loads from: a run's or a built-in model's folder, a converted .gguf,
    a Hub model already in the local cache. ConfigError when there is none (nothing is downloaded)."""
    try:
        folder = Path(model_folder(model))
    except (OSError, ValueError, subprocess.CalledProcessError) as e:  # a built-in model whose build failed
        raise ConfigError(f"model '{model}' cannot be loaded here ({e})") from None
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not a Hub id, or not in the local cache: huggingface_hub's several errors
        raise ConfigError(
            f"model '{model}' is neither a local folder nor in this machine's Hugging Face cache "
            "(the token view never downloads): download it once, or point at a local copy"
        ) from None


def float32_bytes(folder: Path) -> int:
    """The memory a model folder's weights take as float32; a LoRA adapter's, with its base model's."""
    weights = [p for p in folder.iterdir() if p.suffix == ".safetensors"] or [
        p for p in folder.iterdir() if p.suffix == ".bin"
    ]
    stored = sum(p.stat().st_size for p in weights)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    need = stored * (2 if str(config.get("dtype") or config.get("torch_dtype")) in ("bfloat16", "float16") else 1)
    adapter = folder / "adapter_config.json"
    base = json.loads(adapter.read_text()).get("base_model_name_or_path") if adapter.is_file() else None
    return need + (float32_bytes(weights_folder(base)) if base else 0)


def check_memory(folder: Path, name: str) -> None:
    """ConfigError when the model, as float32, would not fit in MEMORY_SHARE of the memory free now."""
    import psutil

    need = float32_bytes(folder)
    free = psutil.virtual_memory().available
    if need > MEMORY_SHARE * free:
        raise ConfigError(
            f"model '{name}' needs about {need / 2**30:.1f} GiB as float32 and this machine has "
            f"{free / 2**30:.1f} GiB free: free memory (stop a run) or use a machine with more"
        )


def fingerprint(model: str) -> tuple:
    """What tells one state of a model folder's weights from another (sizes and times of its weight
    files): a folder saved again is another model to a cache. () for a name that is not a folder."""
    folder = Path(model)
    if not folder.is_dir():
        return ()
    return tuple(
        sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.iterdir()
            if p.suffix in (".safetensors", ".bin")
        )
    )


def load(model: str):
    """(model, tokenizer) for `model` (a name as run.yaml has it, or a folder), float32 on the CPU."""
    # All of it under the lock: a GGUF file's conversion imports transformers, and from_pretrained imports
    # the model's own classes (and PEFT's, for an adapter) as it loads.
    with HEAVY_IMPORTS:
        folder = weights_folder(model)
        check_memory(folder, model)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        except Exception as e:  # transformers' and safetensors' many errors (a half-written checkpoint): one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"model '{model}' cannot be loaded here ({reason})") from None
    return loaded.eval(), tokenizer


def pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text, so that the pieces joined are the decoded text (a character split across
    tokens appears on its last one)."""
    out, done = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1])
        if text.endswith("\ufffd") or not text.startswith(done):
            out.append("")
            continue
        out.append(text[len(done) :])
        done = text
    if out and len(tokenizer.decode(ids)) > len(done):  # a last character left split: on the last token
        out[-1] += tokenizer.decode(ids)[len(done) :]
    return out


def score(model, tokenizer, prompt_ids: list[int], ids: list[int], temperature: float) -> dict[str, list]:
    """Under `model`: each completion token's log-probability, the entropy at its place, and the TOP
    likeliest tokens there with their log-probabilities, at `temperature`."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    top = logp.topk(TOP, dim=-1)
    return {
        "logprob": logp.gather(-1, torch.tensor(ids, dtype=torch.long)[:, None])[:, 0].tolist(),
        "entropy": (-(logp.exp() * logp).nansum(-1)).tolist(),
        "top": [
            [[tokenizer.decode([t]), v] for t, v in zip(row_ids, row_values)]
            for row_ids, row_values in zip(top.indices.tolist(), top.values.tolist())
        ],
    }


def around(choices: dict[str, str], step: int) -> tuple[str, str]:
    """The two models (labels of model_choices) nearest on either side of a rollout sampled for `step`:
    the newest kept before that step's update (else the starting model), and the oldest kept after it
    (else the saved model). Their difference is that update and the fewest others. A live run that has
    kept nothing after the step yet gets its newest model and the one before it: both older than the
    sample."""
    later = [c for c in choices if updates(c) >= step]
    last = min(later, key=updates) if later else max(choices, key=updates)  # none kept after it yet: the newest
    first = max((c for c in choices if updates(c) < min(step, updates(last))), key=updates, default="before")
    return first, last


def updates(label: str) -> float:
    """How many updates the model of a model_choices label has had: 0 for the starting model, a
    checkpoint's step, every one for the saved model."""
    return 0 if label == "before" else float("inf") if label == "after" else int(label.rsplit("-", 1)[1])


def described(label: str) -> str:
    """A model_choices label in words."""
    if label == "before":
        return "the starting model"
    if label == "after":
        return "the trained model (model/)"
    return f"the weights after step {label.rsplit('-', 1)[1]} ({label})"


def token_view(
    run_dir: str | Path, rollout: dict, before, after, after_label: str = "after", before_label: str = "before"
) -> TokenView:
    """The token view of `rollout` (a record: step, prompt_id, sample, prompt, completion) between
    loaded models `before` and `after`, each a (model, tokenizer) from load()."""
    cfg = load_config(config_path(run_dir), check=False)
    tokenizer = after[1]
    ids = sampled_ids(run_dir, int(rollout["step"]), rollout["prompt_id"], int(rollout["sample"]))
    recorded = ids is not None
    if not recorded:
        ids = tokenizer(rollout["completion"], add_special_tokens=False)["input_ids"]
    vocabulary = after[0].get_input_embeddings().num_embeddings
    if (odd := [i for i in ids if not 0 <= i < vocabulary]) and recorded:
        raise ConfigError(
            f"the token ids recorded for this rollout hold {odd[0]}, past this model's vocabulary of {vocabulary} "
            f"tokens: its line in {TOKENS}/ is damaged, or was written by another model"
        )
    if odd:
        raise ConfigError(
            f"the tokenizer gives this completion's text id {odd[0]}, past its model's vocabulary of {vocabulary} "
            "tokens: the model folder's tokenizer is not its model's"
        )
    prompt_ids = tokenizer(text=rollout["prompt"])[
        "input_ids"
    ]  # as TRL tokenises a text prompt (a BOS where the tokenizer adds one)
    temperature = float(cfg.grpo.get("temperature", grpo_default("temperature")))
    was = score(*before, prompt_ids, ids, temperature)
    now = score(*after, prompt_ids, ids, temperature)
    tokens = [
        {
            "token": text,
            "id": token,
            "logprob_before": was["logprob"][i],
            "logprob_after": now["logprob"][i],
            "entropy_before": was["entropy"][i],
            "entropy_after": now["entropy"][i],
            "top_before": was["top"][i],
            "top_after": now["top"][i],
        }
        for i, (text, token) in enumerate(zip(pieces(tokenizer, ids), ids))
    ]
    return TokenView(
        tokens, cfg.model_name if before_label == "before" else before_label, after_label, recorded, temperature
    )


def find_rollout(run_dir: str | Path, step: int, prompt_id: str, sample: int) -> dict:
    if not config_path(run_dir).is_file():
        raise ConfigError(f"'{run_dir}' is not a run folder (it has no run.yaml): give a folder under runs/")
    store = RunStore(run_dir)
    store.refresh()
    rollout = store.rollout(prompt_id, step, sample)
    if rollout is None:
        raise ConfigError(
            f"run '{run_dir}' has no rollout at step {step} with prompt id {prompt_id} and sample "
            f"{sample}: the Rollouts page lists them"
        )
    return rollout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--prompt-id", required=True)
    parser.add_argument("--sample", type=int, required=True)
    parser.add_argument(
        "--checkpoint",
        help="compare the starting model with checkpoint-<N>/ (give N), or with the saved model (after); "
        "by default, the two models kept nearest on either side of the sample's step",
    )
    parser.add_argument("--json", action="store_true", help="a JSON list: one object per completion token")
    args = parser.parse_args(argv)
    try:
        rollout = find_rollout(args.run_dir, args.step, args.prompt_id, args.sample)
        choices = model_choices(args.run_dir)
        first, label = ("before", args.checkpoint) if args.checkpoint else around(choices, args.step)
        label = f"checkpoint-{label}" if label.isdigit() else label
        if label not in choices or label == "before":
            kept = [c.removeprefix("checkpoint-") for c in choices if c != "before"]
            name = {"after": "saved model (model/)", "before": "checkpoint or saved model"}.get(label, label)
            asked = (
                "--checkpoint before would compare the starting model with itself"
                if args.checkpoint == "before"
                else f"run '{args.run_dir}' has no {name} to compare with"
            )
            raise ConfigError(
                f"{asked}: give --checkpoint "
                + (
                    " or ".join([", ".join(kept[:-1]), kept[-1]] if len(kept) > 1 else kept)
                    if kept
                    else "once the run has kept a checkpoint or saved its model"
                )
            )
        view = token_view(args.run_dir, rollout, load(choices[first]), load(choices[label]), label, first)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(view.tokens, ensure_ascii=False))
        return 0
    print(
        f"{'before' if view.recorded else 'tokenised again (the run did not record its token ids); before'}: "
        f"{view.before}   after: {view.after}   log-probabilities at temperature {view.temperature}"
    )
    print(f"{'token':>16} {'logp before':>12} {'logp after':>11} {'change':>8} {'entropy before':>15} {'after':>7}")
    for t in view.tokens:
        print(
            f"{t['token']!r:>16} {t['logprob_before']:12.3f} {t['logprob_after']:11.3f} "
            f"{t['logprob_after'] - t['logprob_before']:+8.3f} {t['entropy_before']:15.3f} {t['entropy_after']:7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
