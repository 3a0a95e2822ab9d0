"""core/loss.py against TRL's own GRPOTrainer on the same batch of the built-in tiny model: the loss of
every loss_type, with and without the KL term, on a batch's first update and on its second (the model
moved since it sampled: the clip acts); and TRL's gradient with respect to each token's log-probability
against the worked step's push (core.loss.push, token_pushes), on both updates."""

import pytest
import torch

from core.loss import LOSS_SPREADS, completion_logps, grpo_loss, push, token_pushes

LOSS_TYPES = list(LOSS_SPREADS)


def prompts_dataset():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"{a} + {a + 2} =" for a in range(1, 9)]})


def varied(completions, **kwargs):  # rewards that differ within groups, so that advantages are not 0
    return [len(c) % 4 / 3 for c in completions]


def batch_of(tiny_model_dir, tmp_path, num_iterations: int):
    """A TRL trainer (beta > 0, so its batches carry the reference's log-probabilities) and one generation
    batch of 3 groups of K=4 from it, as TRL's training step gets it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=12,
        num_generations=4,
        gradient_accumulation_steps=1,
        num_iterations=num_iterations,
        max_completion_length=10,
        temperature=0.9,
        beta=0.04,
        learning_rate=1e-5,
        report_to="none",
        save_strategy="no",
        seed=5,
        bf16=False,
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        reward_funcs=[varied],
        args=args,
        train_dataset=prompts_dataset(),
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what TRL's training loop sets
    rows = [prompts_dataset()[i] for i in range(3) for _ in range(4)]
    inputs = trainer._generate_and_score_completions(rows)
    assert inputs["advantages"].abs().sum() > 0
    return trainer, inputs


def ours(trainer, inputs, loss_type: str, beta: float):
    """The loss of core/loss.py on TRL's batch, from the model's own log-probabilities (completion_logps)."""
    width = inputs["completion_ids"].size(1)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    logps = completion_logps(trainer.model, ids, attention, width, trainer.temperature)
    old = inputs.get("old_per_token_logps")
    return grpo_loss(
        logps,
        logps.detach() if old is None else old,
        inputs.get("ref_per_token_logps"),
        inputs["advantages"],
        inputs["completion_mask"].float(),
        loss_type,
        beta,
        trainer.epsilon_low,
        trainer.epsilon_high,
        trainer.max_completion_length,
        step_tokens=float(inputs["num_items_in_batch"]),
        accumulation=1,
    )


def ratios_now(trainer, inputs):
    """Each completion token's exp(logp - old) under the model as it is now: [samples, tokens]."""
    width = inputs["completion_ids"].size(1)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logps = completion_logps(trainer.model, ids, attention, width, trainer.temperature)
    return (logps - inputs["old_per_token_logps"]).exp()


def moved(trainer, inputs):
    """Move the model away from the one that sampled, as earlier updates of a reused batch do, until
    ratios leave the clip's range."""
    assert inputs["old_per_token_logps"] is not None
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        trls(trainer, inputs, "grpo", 0.0).backward()
        optimizer.step()
    ratio = ratios_now(trainer, inputs)[inputs["completion_mask"].bool()]
    assert ((ratio < 0.8) | (ratio > 1.2)).any()  # some tokens are clipped


def trls(trainer, inputs, loss_type: str, beta: float):
    trainer.loss_type, trainer.beta = loss_type, beta
    return trainer.compute_loss(trainer.model, inputs)


@pytest.mark.slow
@pytest.mark.parametrize("num_iterations", [1, 2], ids=["first update", "second update"])
def test_the_plain_loss_equals_trls_for_every_loss_type(tiny_model_dir, tmp_path, num_iterations):
    trainer, inputs = batch_of(tiny_model_dir, tmp_path, num_iterations)
    if num_iterations == 2:
        moved(trainer, inputs)
    for loss_type in LOSS_TYPES:
        for beta in (0.0, 0.04):
            theirs, mine = trls(trainer, inputs, loss_type, beta), ours(trainer, inputs, loss_type, beta)
            assert float(mine.detach()) == pytest.approx(float(theirs.detach()), rel=1e-4, abs=1e-6), (loss_type, beta)


def trls_gradient(trainer, inputs, loss_type: str, beta: float):
    """Minus TRL's gradient of its loss with respect to each token's log-probability: [samples, tokens]."""
    compute = trainer._get_per_token_logps_and_entropies
    seen = {}

    def kept(*args, **kwargs):  # TRL's own log-probabilities, kept to read their gradient after backward
        logps, entropies, aux = compute(*args, **kwargs)
        logps.retain_grad()
        seen["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = kept
    try:
        trainer.model.zero_grad()
        trls(trainer, inputs, loss_type, beta).backward()
    finally:
        trainer._get_per_token_logps_and_entropies = compute
    return -seen["logps"].grad


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_trls_gradient_on_each_tokens_log_probability_is_minus_the_worked_steps_push(tiny_model_dir, tmp_path, beta):
    trainer, inputs = batch_of(tiny_model_dir, tmp_path, 1)
    lengths = inputs["completion_mask"].sum(1).tolist()
    advantages = inputs["advantages"].tolist()
    for loss_type in LOSS_TYPES:
        pushed = trls_gradient(trainer, inputs, loss_type, beta)
        expected = push(lengths, advantages, loss_type, trainer.max_completion_length, trainer.epsilon_high)
        for i, n in enumerate(lengths):
            assert pushed[i, :n].tolist() == pytest.approx([expected[i]] * n, rel=1e-4, abs=1e-7), loss_type
            assert pushed[i, n:].abs().sum() == 0  # padding: no push


@pytest.mark.slow
def test_on_a_later_update_trls_gradient_is_the_push_at_each_tokens_ratio(tiny_model_dir, tmp_path):
    trainer, inputs = batch_of(tiny_model_dir, tmp_path, 2)
    moved(trainer, inputs)
    mask = inputs["completion_mask"].bool()
    ratios = [row[m].tolist() for row, m in zip(ratios_now(trainer, inputs), mask)]
    advantages = inputs["advantages"].tolist()
    for loss_type in LOSS_TYPES:
        pushed = trls_gradient(trainer, inputs, loss_type, 0.0)
        expected = token_pushes(
            ratios, advantages, loss_type, trainer.max_completion_length, trainer.epsilon_low, trainer.epsilon_high
        )
        for i, m in enumerate(mask):
            assert pushed[i][m].tolist() == pytest.approx(expected[i], rel=1e-3, abs=1e-7), loss_type
    clipped = token_pushes(ratios, advantages, "grpo", trainer.max_completion_length)
    assert any(p == 0 and a != 0 for row, a in zip(clipped, advantages) for p in row)  # the clip cut some tokens


def test_push_by_hand():
    # dapo: every token of the step the same, 1 / (3 + 1 tokens); grpo: 1 / (a sample's tokens x 2 samples)
    assert push([3, 1], [1.0, -2.0], "dapo", 8) == pytest.approx([1 / 4, -2 / 4])
    assert push([3, 1], [1.0, -2.0], "grpo", 8) == pytest.approx([1 / 6, -2 / 2])
    assert push([3, 1], [1.0, -2.0], "dr_grpo", 8) == pytest.approx([1 / 16, -2 / 16])
    assert push([3, 1], [1.0, -2.0], "cispo", 8, epsilon_high=0.2) == pytest.approx([0.2 / 4, -0.4 / 4])
    with pytest.raises(ValueError, match="loss_type must be one of"):
        push([1], [1.0], "ppo", 8)
    # a later update: a token past 1 + epsilon with a positive advantage, or below 1 - epsilon with a
    # negative one, is cut (0); one inside the range is pushed by advantage x ratio x weight
    assert token_pushes([[1.5, 1.1], [0.5]], [1.0, -1.0], "dapo", 8) == [
        pytest.approx([0.0, 1.1 / 3]),
        pytest.approx([0.0]),
    ]
    assert token_pushes([[0.5]], [1.0], "dapo", 8) == [pytest.approx([0.5])]  # below the range, pushed up


@pytest.mark.slow
def test_the_worked_step_on_the_rollouts_page_shows_the_push(tmp_path, monkeypatch):
    from core.advantage import run_settings
    from core.rundir import read_config
    from core.store import RunStore
    from tests.dashboard_fixtures import make_runs
    from tests.test_dashboard import open_page, texts

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    make_runs(tmp_path)
    store = RunStore(tmp_path / "learning")
    store.refresh()
    row = store.rollouts_page(limit=1)[0].iloc[0]
    worked, _ = store.worked_step(row["prompt_id"], int(row["step"]), run_settings(read_config(tmp_path / "learning")))
    at = open_page("rollouts", run="learning", prompt_id=row["prompt_id"], step=str(row["step"]), sample="0")
    assert "5 · The push on each token" in texts(at)
    (table,) = [d.value for d in at.dataframe if "push per token" in d.value]
    assert table["push per token"].tolist() == pytest.approx(worked["push"].tolist())
    assert any(abs(p) > 0 for p in worked["push"])


@pytest.mark.slow
def test_the_worked_step_of_a_run_that_reuses_its_samples_says_so(tmp_path, monkeypatch):
    import yaml

    from core.rundir import config_path
    from core.store import RunStore
    from tests.dashboard_fixtures import make_runs
    from tests.test_dashboard import open_page, texts

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    make_runs(tmp_path)
    config = yaml.safe_load(config_path(tmp_path / "learning").read_text())
    config["grpo"] = {**config.get("grpo", {}), "num_iterations": 2}  # the run's other GRPO settings kept
    config_path(tmp_path / "learning").write_text(yaml.safe_dump(config))
    store = RunStore(tmp_path / "learning")
    store.refresh()
    row = store.rollouts_page(limit=1)[0].iloc[0]
    at = open_page("rollouts", run="learning", prompt_id=row["prompt_id"], step=str(row["step"]), sample="0")
    assert any("trains each batch of samples for 2 updates" in w.value for w in at.warning)
    runs = open_page("runs", run="learning")  # and the Runs page says it above the charts
    assert any("Each batch of samples trains 2 updates" in i.value for i in runs.info)
    assert "6 · Each update" not in texts(at)  # a run that recorded no updates: the warning says so


@pytest.mark.slow
def test_a_run_that_reuses_its_samples_records_each_update_as_trls_loss_saw_it(
    tiny_model_dir, tmp_path, monkeypatch, train_here
):
    """Each sample trained twice (num_iterations 2, one micro-batch a step): the ratios and advantages in
    updates/ give, through core/loss.py, the very loss and clip share TRL logged for each step."""
    import json
    from collections import Counter

    from core.advantage import run_settings
    from core.rundir import read_config, update_files
    from core.store import RunStore
    from tests.test_dashboard import open_page, texts

    run_dir = tmp_path / "reused"
    sets = [
        "train.num_train_steps=4",
        "train.per_device_train_batch_size=16",
        "train.gradient_accumulation_steps=1",
        "grpo.num_iterations=2",
        "train.learning_rate=3e-3",  # far enough in one step that the second update's ratios reach the clip
        "eval.enabled=false",
        f"train.output_dir={run_dir}",
    ]
    code, err = train_here("--config", "configs/tiny_cpu.yaml", *[a for s in sets for a in ("--set", s)])
    assert code == 0, err[-2000:]
    (path,) = update_files(run_dir)
    updates = [json.loads(line) for line in path.read_text().splitlines()]
    rollouts = {
        (r["step"], r["prompt_id"], r["sample"]): r
        for r in map(json.loads, (run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines())
    }
    assert {k[0] for k in rollouts} == {1, 3}  # sampled every other step
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "frac_reward_zero_std" in m] == [1, 3]  # TRL logs a batch where it sampled
    assert Counter((u["batch_step"], u["prompt_id"], u["sample"]) for u in updates) == {k: 2 for k in rollouts}
    assert {(u["batch_step"], u["step"]) for u in updates} == {(1, 1), (1, 2), (3, 3), (3, 4)}
    for u in updates:
        assert len(u["ratios"]) == rollouts[u["batch_step"], u["prompt_id"], u["sample"]]["completion_tokens"]
    first = [r for u in updates if u["step"] == u["batch_step"] for r in u["ratios"]]
    assert first == pytest.approx([1.0] * len(first), abs=1e-5)  # the model that sampled: ratio 1
    later = [r for u in updates if u["step"] != u["batch_step"] for r in u["ratios"]]
    assert max(abs(r - 1) for r in later) > 0.2  # the model moved, past the clip's range

    store = RunStore(run_dir)
    store.refresh()
    settings = run_settings(read_config(run_dir))
    for u in updates:  # each row is the sample it says: its advantage is that sample's (recomputed here)
        group = store.group(u["prompt_id"], u["batch_step"], settings)
        assert u["advantage"] == pytest.approx(float(group.set_index("sample").loc[u["sample"], "advantage"]), abs=1e-4)
    metrics = {
        m["step"]: m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in m
    }
    for step in (1, 2, 3, 4):
        rows = [u for u in updates if u["step"] == step]
        width = max(len(u["ratios"]) for u in rows)
        mask = torch.tensor([[1.0] * len(u["ratios"]) + [0.0] * (width - len(u["ratios"])) for u in rows])
        log_ratios = torch.tensor([[*u["ratios"], *[1.0] * (width - len(u["ratios"]))] for u in rows]).log()
        advantages = torch.tensor([u["advantage"] for u in rows])
        loss = grpo_loss(log_ratios, torch.zeros_like(log_ratios), None, advantages, mask, "dapo")
        assert float(loss) == pytest.approx(metrics[step]["loss"], abs=1e-5), step
        ratio, a = log_ratios.exp(), advantages[:, None]
        cut = (((ratio < 0.8) & (a < 0)) | ((ratio > 1.2) & (a > 0))).float()
        assert float((cut * mask).sum() / mask.sum()) == pytest.approx(
            metrics[step]["clip_ratio/region_mean"], abs=1e-6
        )
    assert any(metrics[step]["clip_ratio/region_mean"] > 0 for step in (2, 4))

    # the worked step walks both updates of a group, with what store.updates computed from the file
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    prompt_id = updates[0]["prompt_id"]
    shown = store.updates(prompt_id, 1, settings)
    assert [step for step, _ in shown] == [1, 2]
    assert shown[1][1]["cut"].sum() > 0 or shown[1][1]["ratio"].tolist() != pytest.approx([1.0] * len(shown[1][1]))
    at = open_page("rollouts", run="reused", prompt_id=prompt_id, step="1", sample="0")
    assert "6 · Each update of the batch" in texts(at)
    tables = [d.value for d in at.dataframe if "tokens cut by the clip" in d.value]
    assert [t["mean ratio"].tolist() for t in tables] == [pytest.approx(rows["ratio"].tolist()) for _, rows in shown]
    assert [t["push per token (mean)"].tolist() for t in tables] == [
        pytest.approx(rows["push"].tolist()) for _, rows in shown
    ]
