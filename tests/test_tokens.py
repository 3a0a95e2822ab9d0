"""core.tokens: each completion token's log-probability and entropy before and after training."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

import core.tokens
from core.errors import ConfigError
from core.rundir import config_path, model_dir, tokens_path
from core.store import RunStore
from tests.conftest import ROOT


def tokens_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "core.tokens", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def rollout(tiny_run):
    store = RunStore(tiny_run)
    store.refresh()
    page, _ = store.rollouts_page()
    row = page.iloc[len(page) // 2]
    return store.rollout(row["prompt_id"], int(row["step"]), int(row["sample"]))


def where(rollout):
    return ["--step", rollout["step"], "--prompt-id", rollout["prompt_id"], "--sample", rollout["sample"]]


def test_the_command_scores_the_sampled_tokens_as_a_forward_pass_does(tiny_run, rollout, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = tokens_cli(tiny_run, *where(rollout), "--checkpoint", "after", "--json")
    assert result.returncode == 0, result.stderr
    tokens = json.loads(result.stdout)
    ids = [t["id"] for t in tokens]
    recorded = [json.loads(line) for line in tokens_path(tiny_run).read_text().splitlines()]
    assert ids == next(
        r["ids"]
        for r in recorded
        if (r["step"], r["prompt_id"], r["sample"]) == (rollout["step"], rollout["prompt_id"], rollout["sample"])
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir(tiny_run))
    special = set(tokenizer.all_special_ids)
    assert "".join(t["token"] for t in tokens if t["id"] not in special) == rollout["completion"]
    # the figures "after" are a plain forward pass of the saved model at the run's temperature
    temperature = yaml.safe_load(config_path(tiny_run).read_text())["grpo"].get("temperature", 1.0)  # TRL's default
    prompt = tokenizer(text=rollout["prompt"])["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir(tiny_run))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1] / temperature
    expected = torch.log_softmax(logits, -1)[range(len(ids)), ids]
    assert torch.allclose(torch.tensor([t["logprob_after"] for t in tokens]), expected, atol=1e-4)
    for t in tokens:
        assert t["logprob_before"] <= 0 and t["logprob_after"] <= 0
        assert t["entropy_before"] >= 0 and t["entropy_after"] >= 0
        for top in (t["top_before"], t["top_after"]):
            assert len(top) == 5 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    assert any(abs(t["logprob_after"] - t["logprob_before"]) > 1e-3 for t in tokens)  # training moved them
    assert core.tokens.main([str(tiny_run), *map(str, where(rollout)), "--checkpoint", "after"]) == 0  # as a table
    table = capsys.readouterr().out
    assert "temperature" in table and len(table.splitlines()) == len(tokens) + 2


def test_the_command_compares_the_models_kept_around_the_step_by_default(tiny_run, tmp_path, capsys):
    run = tmp_path / "kept"
    shutil.copytree(tiny_run, run)
    shutil.copytree(model_dir(run), run / "checkpoint-1")  # as if the run had kept its weights after step 1
    store = RunStore(run)
    store.refresh()
    for step, pair in ((1, "before: builtin:tiny   after: checkpoint-1"), (2, "before: checkpoint-1   after: after")):
        page, _ = store.rollouts_page(step_min=step, step_max=step, limit=1)
        row = page.iloc[0]
        args = [str(run), "--step", str(step), "--prompt-id", row["prompt_id"], "--sample", str(row["sample"])]
        assert core.tokens.main(args) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert header.startswith(pair)


def records(run):
    return [json.loads(line) for line in tokens_path(run).read_text().splitlines()]


def keyed(record, rollout):
    return all(record[k] == rollout[k] for k in ("step", "prompt_id", "sample"))


def test_a_run_without_recorded_ids_has_its_text_tokenised_again(tiny_run, rollout, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    choices = core.tokens.model_choices(run)
    models = core.tokens.load(choices["before"]), core.tokens.load(choices["after"])
    tokens_path(run).write_text(  # a line whose ids are not whole numbers is no record of them
        "".join(json.dumps({**r, "ids": ["x", *r["ids"][1:]]} if keyed(r, rollout) else r) + "\n" for r in records(run))
    )
    assert not core.tokens.token_view(run, rollout, *models).recorded
    shutil.rmtree(run / "tokens")
    view = core.tokens.token_view(run, rollout, *models)
    assert not view.recorded and "".join(t["token"] for t in view.tokens) == rollout["completion"]
    models[1][0].resize_token_embeddings(3)  # a tokenizer of a larger vocabulary than its model's
    with pytest.raises(ConfigError, match="^the tokenizer gives this completion's text id .* vocabulary of 3 "):
        core.tokens.token_view(run, rollout, *models)


def test_each_thing_that_cannot_be_shown_is_one_line_and_exit_2(tiny_run, rollout, tmp_path, monkeypatch, capsys):
    hub = tmp_path / "hub"
    shutil.copytree(tiny_run, hub)
    config = yaml.safe_load(config_path(hub).read_text())
    config_path(hub).write_text(yaml.safe_dump({**config, "model_name": "nobody/no-such-model"}))
    damaged = tmp_path / "damaged"  # its line of recorded ids holds an id no token has
    shutil.copytree(tiny_run, damaged)
    tokens_path(damaged).write_text(
        "".join(
            json.dumps({**r, "ids": [10**9, *r["ids"][1:]]} if keyed(r, rollout) else r) + "\n"
            for r in records(damaged)
        )
    )
    cases = {
        "is not a run folder": [tmp_path / "nothing", *where(rollout)],
        "has no rollout": [tiny_run, "--step", 999, "--prompt-id", rollout["prompt_id"], "--sample", 0],
        "has no checkpoint-7 to compare with: give --checkpoint after": [tiny_run, *where(rollout), "--checkpoint", 7],
        "has no best to compare with: give --checkpoint after": [tiny_run, *where(rollout), "--checkpoint", "best"],
        "before would compare the starting model with itself: give --checkpoint ": [
            tiny_run,
            *where(rollout),
            "--checkpoint",
            "before",
        ],
        "Hugging Face cache": [hub, *where(rollout)],
    }
    for words, args in cases.items():  # in this process: the command's main(), as `python -m core.tokens` runs it
        assert core.tokens.main(list(map(str, args))) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert core.tokens.main([str(damaged), *map(str, where(rollout))]) == 2  # the models load first: their progress
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith(
        "error: the token ids recorded for this rollout hold 1000000000, past this model's vocabulary of 604 tokens"
    )
    monkeypatch.setattr(core.tokens, "MEMORY_SHARE", 1e-9)  # a model larger than the memory free
    assert core.tokens.main([str(tiny_run), *map(str, where(rollout))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GiB free" in err


@pytest.mark.parametrize(
    "step, expected",
    [
        (1, ("before", "checkpoint-175")),  # sampled by the starting model, its update in the first save
        (175, ("before", "checkpoint-175")),
        (176, ("checkpoint-175", "checkpoint-350")),
        (400, ("checkpoint-350", "after")),
    ],
)
def test_the_token_view_compares_the_kept_weights_around_a_samples_step(step, expected):
    choices = {"before": "m", "checkpoint-175": "c1", "checkpoint-350": "c2", "after": "f"}
    assert core.tokens.around(choices, step) == expected
    first, last = expected
    assert core.tokens.updates(first) < step <= core.tokens.updates(last)  # the change holds this sample's update
    # a live run with no save after the step yet: its newest save, and the one before it
    assert core.tokens.around({"before": "m", "checkpoint-10": "c"}, 20) == ("before", "checkpoint-10")
    assert core.tokens.described("checkpoint-350") == "the weights after step 350 (checkpoint-350)"
