"""The store's group queries: one step's batch with each sample's advantage, logged by TRL or recomputed
(core/advantage.py), and the worked step from the rewards to the push on each token (core/loss.py)."""

from __future__ import annotations

import pandas as pd

from core.advantage import advantages, mean_std, run_settings
from core.loss import push


def _listed(value) -> list:
    """A list column's value from a DataFrame row as a list ([] for null)."""
    return [] if value is None or isinstance(value, float) else list(value)


class Groups:
    """RunStore's group queries, on a fresh cursor each (Queries._query)."""

    # One step's whole generation batch, group by group: the group view shows one prompt's samples, and the
    # advantage (core.advantage) compares each sample with its group and, for some settings, the batch.
    STEP_GROUPS = """
SELECT prompt_id, sample, rank, reward, rewards, map_keys(rewards) AS names, map_values(rewards) AS reward_values,
       correct, prediction, ground_truth, completion, completion_tokens, question, advantage AS trl_advantage
FROM rollouts WHERE step = $step ORDER BY prompt_id, sample, rank
"""

    def group(self, prompt_id: str, step: int, settings: dict | None = None):
        """All K samples of one prompt at one step, with each one's advantage: the one TRL logged (a plain
        TRL run's completions table), else recomputed by core.advantage for the run's `settings`
        (core.advantage.run_settings; TRL's defaults when None). `.attrs["logged"]` says which."""
        batch = self._step_batch(step, settings or run_settings({}))
        rows = batch[batch["prompt_id"] == prompt_id].reset_index(drop=True)[list(self.GROUP_COLUMNS)]
        rows.attrs["logged"] = batch.attrs["logged"]
        return rows

    GROUP_COLUMNS = (
        "sample",
        "rank",
        "reward",
        "rewards",
        "advantage",
        "correct",
        "prediction",
        "ground_truth",
        "completion",
        "completion_tokens",
        "question",
    )

    def _step_batch(self, step: int, settings: dict):
        """Every sample of a step (STEP_GROUPS) with its advantage, logged or recomputed (`.attrs["logged"]`)."""
        batch = self._query(self.STEP_GROUPS, {"step": step})
        logged = bool(len(batch) > 0 and batch["trl_advantage"].notna().all())  # a plain TRL run's own
        batch["advantage"] = batch["trl_advantage"] if logged else self._advantages(batch, settings)
        batch.attrs["logged"] = logged
        return batch

    @staticmethod
    def _advantages(batch, settings: dict) -> list[float]:
        """core.advantage's advantage of each row of a step's batch (STEP_GROUPS), in the rows' order."""
        by_function = settings["aggregation"] == "normalize_then_sum"  # then each function's value counts
        groups: dict[str, list[list[float | None]]] = {}
        for row in batch.itertuples():
            if by_function:
                scored = dict(zip(_listed(row.names), _listed(row.reward_values)))
                sample = [scored.get(name) for name in settings["weights"]]
            else:
                sample = [row.reward]
            groups.setdefault(row.prompt_id, []).append([None if v is None or v != v else float(v) for v in sample])
        weights = list(settings["weights"].values()) if by_function else None
        computed = advantages(list(groups.values()), weights, settings["scale_rewards"], settings["aggregation"])
        return [a for group in computed for a in group]  # batch's rows are in the groups' order

    STEP_METRICS = "SELECT name, value FROM metrics WHERE step = $step AND list_contains($names, name)"
    WORKED_METRICS = ("loss", "kl", "entropy", "clip_ratio/region_mean", "grad_norm", "learning_rate")

    def worked_step(self, prompt_id: str, step: int, settings: dict | None = None):
        """One group of one step from rewards to the push on each token: the group (self.group) with
        `push`, minus the gradient of the run's loss (core.loss.push, on the whole step's samples) with
        respect to each of the sample's token log-probabilities on the first update of its batch of samples,
        and `token_weight`, that push per unit of advantage; and what they came from: the group's mean and
        std of rewards, the std of the whole step's (scale_rewards: batch), the step's samples and tokens,
        and the metrics TRL logged for the step."""
        settings = settings or run_settings({})
        batch = self._step_batch(step, settings)
        lengths = [0 if pd.isna(n) else int(n) for n in batch["completion_tokens"]]
        spread = {
            "loss_type": settings["loss_type"],
            "max_completion_length": settings["max_completion_length"],
            "epsilon_high": settings.get("epsilon_high", 0.2),
        }
        batch["push"] = push(lengths, batch["advantage"].tolist(), **spread)
        batch["token_weight"] = push(lengths, [1.0] * len(batch), **spread)
        group = batch[batch["prompt_id"] == prompt_id].reset_index(drop=True)
        group = group[[*self.GROUP_COLUMNS, "token_weight", "push"]]
        mean, std = mean_std(group["reward"].tolist())
        logged = self._query(self.STEP_METRICS, {"step": step, "names": list(self.WORKED_METRICS)})
        return group, {
            "group_mean": mean,
            "group_std": std,
            "batch_std": mean_std(batch["reward"].tolist())[1],
            "samples": len(batch),
            "tokens": sum(lengths),
            "metrics": dict(zip(logged["name"], logged["value"])),
        }
