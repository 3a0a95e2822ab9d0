"""The GRPO advantage of each sample, recomputed from the rewards as TRL's GRPOTrainer computes it
(`_generate_and_score_completions`, trl 1.16): training uses TRL's own; the pages show these, and
tests/test_advantage.py checks them equal to TRL's. What the advantage does: README, "What GRPO does here".

    scale_rewards: group   A = (r - mean(group)) / (std(group) + 1e-4)    (TRL's default)
    scale_rewards: batch   A = (r - mean(group)) / (std(batch) + 1e-4)
    scale_rewards: none    A =  r - mean(group)

r is a sample's weighted reward, its group the K samples of its prompt, std the sample standard
deviation (n - 1, as torch.std). With `multi_objective_aggregation: normalize_then_sum` each reward
function is normalised within the group first, and their weighted sum over the batch. The loss that
uses the advantages: core/loss.py.
"""

from __future__ import annotations

from statistics import fmean, stdev

from core.config import read_setting

EPSILON = 1e-4  # TRL's: keeps a group of nearly equal rewards from dividing by ~0
SCALE_REWARDS = ("group", "batch", "none")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
FORMULAS = {  # for captions: the advantage of the run's setting, in words a reader can check
    "group": "advantage = (reward − group mean) / (group std + 1e-4)",
    "batch": "advantage = (reward − group mean) / (std of the step's whole batch + 1e-4)",
    "none": "advantage = reward − group mean (scale_rewards: none, no division by a std)",
    "normalize_then_sum": "each reward function normalised in its group, (value − group mean) / (group std + 1e-4); "
    "advantage = their weighted sum, normalised over the step's batch the same way",
}


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample std of the values that are there (TRL's nanmean and nanstd; None, or a NaN, is its NaN)."""
    there = [v for v in values if v is not None and v == v]
    return (fmean(there) if there else 0.0), (stdev(there) if len(there) > 1 else 0.0)


def _normalised(values: list[float | None], mean: float, std: float) -> list[float | None]:
    return [None if v is None else (v - mean) / (std + EPSILON) for v in values]


def _weighted_sum(values: list[float | None], weights: list[float]) -> float | None:
    """TRL's nansum of the weighted values; None when no reward function scored the sample."""
    if all(v is None for v in values):
        return None
    return sum(w * v for w, v in zip(weights, values, strict=True) if v is not None)


def advantages(
    groups: list[list[list[float | None]]],
    weights: list[float] | None = None,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> list[list[float]]:
    """The advantage of every sample of a generation batch. `groups[g][i][k]`: the value of reward
    function k for sample i of group g (None where it gave none); `weights[k]`: that function's
    weight (1 each by default). Returns `[g][i]`, in the same order; a sample no function scored
    gets 0, as in TRL."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    functions = len(groups[0][0]) if groups and groups[0] else 0
    weights = weights if weights is not None else [1.0] * functions

    if aggregation == "normalize_then_sum":  # each function normalised in its group, then summed
        summed = []
        for group in groups:
            scores = [_normalised(list(column), *mean_std(list(column))) for column in zip(*group)]
            summed.append([_weighted_sum(list(sample), weights) for sample in zip(*scores)])
        mean, std = mean_std([r for group in summed for r in group])
        result = [_normalised(group, mean, std) for group in summed]
    else:
        rewards = [[_weighted_sum(sample, weights) for sample in group] for group in groups]
        _, batch_std = mean_std([r for group in rewards for r in group])
        result = []
        for group in rewards:
            mean, group_std = mean_std(group)
            if scale_rewards == "none":
                result.append([None if r is None else r - mean for r in group])
            else:
                result.append(_normalised(group, mean, group_std if scale_rewards == "group" else batch_std))
    return [[0.0 if a is None else a for a in group] for group in result]


def run_settings(config: dict) -> dict:
    """What the advantage of a run and its spread over tokens depend on, from its run.yaml (`config`,
    a mapping; TRL's and this project's defaults for what it does not say): scale_rewards, aggregation,
    loss_type, max_completion_length, beta (the KL term's weight), the clip's epsilon_low and epsilon_high,
    the optimizer steps a batch of samples is split into (steps_per_batch), and each reward function's weight. A value that cannot be read as its kind (a run.yaml edited by hand)
    is read as absent: its default (config.read_setting)."""

    def choice(key: str, choices, default: str) -> str:
        value = read_setting(config, key, str)
        return value if value in choices else default

    epsilon = read_setting(config, "grpo.epsilon", float, 0.2)
    epsilon_high = read_setting(config, "grpo.epsilon_high", float)
    rewards = read_setting(config, "rewards", list, [])
    # the optimizer steps one batch of samples is split into (grpo.steps_per_generation or generation_batch_size
    # over one step's completions, core.config.updates_per_batch without num_iterations); 1 where not said
    micro = (
        read_setting(config, "train.per_device_train_batch_size", int, 0)
        * read_setting(config, "launch.num_processes", int, 1)
        * read_setting(config, "launch.num_machines", int, 1)
    )
    step = micro * read_setting(config, "train.gradient_accumulation_steps", int, 0)
    generation = read_setting(config, "grpo.generation_batch_size", int) or micro * read_setting(
        config, "grpo.steps_per_generation", int, 0
    )
    return {
        "scale_rewards": choice("grpo.scale_rewards", SCALE_REWARDS, "group"),
        "aggregation": choice("grpo.multi_objective_aggregation", AGGREGATIONS, "sum_then_normalize"),
        "loss_type": read_setting(config, "grpo.loss_type", str, "dapo"),  # any name: the page says which it shows
        "beta": read_setting(config, "grpo.beta", float, 0.0),
        "epsilon_low": epsilon,
        "epsilon_high": epsilon if epsilon_high is None else epsilon_high,  # as TRL: a 0 is a 0
        "max_completion_length": read_setting(config, "max_new_tokens", int, 256),
        # at least 1: a step trained on several batches has them all under its one step number
        "steps_per_batch": max(1.0, generation / step) if generation and step else 1.0,
        "weights": {
            r["name"]: read_setting(r, "weight", float, 1.0)
            for r in rewards
            if isinstance(r, dict) and isinstance(r.get("name"), str)
        },
    }


def formula(settings: dict) -> str:
    """The advantage's formula for a run's settings, for a caption."""
    if settings["aggregation"] == "normalize_then_sum":
        return FORMULAS["normalize_then_sum"]
    return FORMULAS[settings["scale_rewards"]]
