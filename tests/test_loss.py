"""core/loss.py against TRL's own GRPOTrainer on the same batch of the built-in tiny model: the loss of
every loss_type, with and without the KL term, on a batch's first update and on its second (the model
moved since it sampled: the clip acts); and TRL's gradient with respect to each token's log-probability
against the worked step's push (core.loss.push)."""

import pytest
import torch

from core.loss import LOSS_SPREADS, completion_logps, grpo_loss, push

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


def trls(trainer, inputs, loss_type: str, beta: float):
    trainer.loss_type, trainer.beta = loss_type, beta
    return trainer.compute_loss(trainer.model, inputs)


@pytest.mark.slow
@pytest.mark.parametrize("num_iterations", [1, 2], ids=["first update", "second update"])
def test_the_plain_loss_equals_trls_for_every_loss_type(tiny_model_dir, tmp_path, num_iterations):
    trainer, inputs = batch_of(tiny_model_dir, tmp_path, num_iterations)
    if num_iterations == 2:  # move the model away from the one that sampled: ratios leave the clip's range
        assert inputs["old_per_token_logps"] is not None
        optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            trls(trainer, inputs, "grpo", 0.0).backward()
            optimizer.step()
        width = inputs["completion_ids"].size(1)
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with torch.no_grad():
            ratio = (
                completion_logps(trainer.model, ids, attention, width, trainer.temperature)
                - inputs["old_per_token_logps"]
            ).exp()[inputs["completion_mask"].bool()]
        assert ((ratio < 0.8) | (ratio > 1.2)).any()  # some tokens are clipped
    for loss_type in LOSS_TYPES:
        for beta in (0.0, 0.04):
            theirs, mine = trls(trainer, inputs, loss_type, beta), ours(trainer, inputs, loss_type, beta)
            assert float(mine.detach()) == pytest.approx(float(theirs.detach()), rel=1e-4, abs=1e-6), (loss_type, beta)


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_trls_gradient_on_each_tokens_log_probability_is_minus_the_worked_steps_push(tiny_model_dir, tmp_path, beta):
    trainer, inputs = batch_of(tiny_model_dir, tmp_path, 1)
    lengths = inputs["completion_mask"].sum(1).tolist()
    advantages = inputs["advantages"].tolist()
    compute = trainer._get_per_token_logps_and_entropies
    seen = {}

    def kept(*args, **kwargs):  # TRL's own log-probabilities, kept to read their gradient after backward
        logps, entropies, aux = compute(*args, **kwargs)
        logps.retain_grad()
        seen["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = kept
    for loss_type in LOSS_TYPES:
        trainer.model.zero_grad()
        trls(trainer, inputs, loss_type, beta).backward()
        gradient = seen["logps"].grad
        expected = push(lengths, advantages, loss_type, trainer.max_completion_length, trainer.epsilon_high)
        for i, n in enumerate(lengths):
            assert (-gradient[i, :n]).tolist() == pytest.approx([expected[i]] * n, rel=1e-4, abs=1e-7), loss_type
            assert gradient[i, n:].abs().sum() == 0  # padding: no push


def test_push_by_hand():
    # dapo: every token of the step the same, 1 / (3 + 1 tokens); grpo: 1 / (a sample's tokens x 2 samples)
    assert push([3, 1], [1.0, -2.0], "dapo", 8) == pytest.approx([1 / 4, -2 / 4])
    assert push([3, 1], [1.0, -2.0], "grpo", 8) == pytest.approx([1 / 6, -2 / 2])
    assert push([3, 1], [1.0, -2.0], "dr_grpo", 8) == pytest.approx([1 / 16, -2 / 16])
    assert push([3, 1], [1.0, -2.0], "cispo", 8, epsilon_high=0.2) == pytest.approx([0.2 / 4, -0.4 / 4])
    with pytest.raises(ValueError, match="loss_type must be one of"):
        push([1], [1.0], "ppo", 8)


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
    from tests.test_dashboard import open_page

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
