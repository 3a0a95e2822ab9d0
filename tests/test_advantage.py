"""core.advantage: the advantage of every sample, by hand on small numbers and against TRL's own
GRPOTrainer, which writes the advantage it trained with beside each completion (log_completions)."""

import pandas as pd
import pytest

from core.advantage import EPSILON, advantages, run_settings


def test_a_group_is_compared_with_itself():
    # one right answer of four: mean 0.25, sample std 0.5
    got = advantages([[[1.0], [0.0], [0.0], [0.0]]])
    assert got == [
        pytest.approx(
            [0.75 / (0.5 + EPSILON), -0.25 / (0.5 + EPSILON), -0.25 / (0.5 + EPSILON), -0.25 / (0.5 + EPSILON)]
        )
    ]
    assert advantages([[[1.0]] * 4, [[0.0]] * 4]) == [[0.0] * 4, [0.0] * 4]  # all equal: no signal


def test_scale_rewards_batch_and_none_and_the_weights():
    groups = [[[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]  # two functions, weights 1 and 0.5
    # weighted totals 1.5, 0.5 | 0.0, 1.0: group means 1.0 and 0.5, group std sqrt(0.5) in both
    group_std, batch_std = 0.5**0.5, (1.25 / 3) ** 0.5  # the batch's 4 totals around their mean 0.75
    assert advantages(groups, [1.0, 0.5], "none") == [[0.5, -0.5], [-0.5, 0.5]]
    scaled = {"group": advantages(groups, [1.0, 0.5], "group"), "batch": advantages(groups, [1.0, 0.5], "batch")}
    for setting, std in (("group", group_std), ("batch", batch_std)):
        assert scaled[setting] == [
            pytest.approx([d / (std + EPSILON) for d in group]) for group in [[0.5, -0.5], [-0.5, 0.5]]
        ]
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none"):
        advantages(groups, scale_rewards="std")


def test_the_runs_clip_and_batch_split_are_read_as_trl_reads_them():
    assert run_settings({"grpo": {"epsilon": 0.3}})["epsilon_high"] == 0.3  # TRL: epsilon_high defaults to epsilon
    assert run_settings({"grpo": {"epsilon": 0.3, "epsilon_high": 0.0}})["epsilon_high"] == 0.0  # a 0 is a 0
    train = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    assert run_settings({"train": train})["steps_per_batch"] == 1  # fresh samples every optimizer step
    assert run_settings({"train": train, "grpo": {"steps_per_generation": 8}})["steps_per_batch"] == 4
    assert run_settings({"train": train, "grpo": {"generation_batch_size": 64}})["steps_per_batch"] == 8
    assert (
        run_settings({"train": train, "launch": {"num_processes": 2}, "grpo": {"generation_batch_size": 64}})[
            "steps_per_batch"
        ]
        == 4
    )
    assert run_settings({})["steps_per_batch"] == 1  # a plain TRL run: not known
    # a step trained on two batches has both under its one step number: the step's rollouts are the step's
    assert run_settings({"train": train, "grpo": {"steps_per_generation": 1}})["steps_per_batch"] == 1


def test_a_sample_no_function_scored_gets_zero_and_is_left_out():
    got = advantages([[[1.0], [0.0], [None], [0.0]]])  # TRL's NaN: out of the mean (1/3) and the std
    std = ((4 / 9 + 2 / 9) / 2) ** 0.5
    assert got == [
        pytest.approx([(2 / 3) / (std + EPSILON), (-1 / 3) / (std + EPSILON), 0.0, (-1 / 3) / (std + EPSILON)])
    ]
    with pytest.raises(ValueError):  # a weight for each function, no more, no fewer
        advantages([[[1.0, 0.0], [0.0, 1.0]]], weights=[1.0])


def length_score(completions, **kwargs):
    return [len(c) % 5 / 4 for c in completions]


def ones_score(completions, **kwargs):  # None (TRL: no score) for some: the NaN-aware means and stds
    return [None if len(c) % 3 == 0 else float(c.count("1") % 2) for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize(
    "scale_rewards, aggregation",
    [
        ("group", "sum_then_normalize"),
        ("batch", "sum_then_normalize"),
        ("none", "sum_then_normalize"),
        ("group", "normalize_then_sum"),
    ],
)
def test_equal_to_trls_own_advantage(tiny_model_dir, tmp_path, scale_rewards, aggregation):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    k, weights = 4, [1.0, 0.5]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=12,
        num_generations=k,
        max_completion_length=12,
        temperature=1.0,
        learning_rate=1e-5,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        log_completions=True,
        reward_weights=weights,
        scale_rewards=scale_rewards,
        multi_objective_aggregation=aggregation,
        seed=3,
        bf16=False,
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        reward_funcs=[length_score, ones_score],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [f"{a} + {a + 2} =" for a in range(1, 7)]}),
    )
    trainer.train()
    table = pd.read_parquet(next((tmp_path / "completions").glob("*.parquet")))
    assert len(table) == 12 and table["advantage"].abs().sum() > 0  # 3 groups of 4, some with a signal
    rows = [[None if v != v else v for v in row] for row in table[["length_score", "ones_score"]].values.tolist()]
    assert any(None in row for row in rows)  # NaN in TRL's table: a function that gave no score
    groups = [rows[i : i + k] for i in range(0, len(rows), k)]  # TRL's layout: a prompt's K samples in a row
    ours = [a for group in advantages(groups, weights, scale_rewards, aggregation) for a in group]
    assert ours == pytest.approx(table["advantage"].tolist(), rel=1e-4, abs=1e-5)
