"""The store's group queries: one step's batch with each sample's advantage, logged by TRL or recomputed
(core/advantage.py), and the worked step from the rewards to the push on each token (core/loss.py), on
each update of its batch of samples where a run trains a batch for several (updates/)."""

from __future__ import annotations

import pandas as pd

from core.advantage import advantages, mean_std, run_settings
from core.loss import push, token_pushes
from core.rundir import update_files


class Groups:
    """RunStore's group queries, on a fresh cursor each (Queries._query)."""

    # One step's whole generation batch, group by group: the group view shows one prompt's samples, and the
    # advantage (core.advantage) compares each sample with its group and, for some settings, the batch.
    STEP_GROUPS = """
SELECT prompt_id, sample, rank, reward, rewards, correct, prediction, ground_truth, completion, completion_tokens,
       question, advantage AS trl_advantage
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
                scored = row.rewards if isinstance(row.rewards, dict) else {}  # each function's value, None kept
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
        # A batch of samples split into several optimizer steps (steps_per_generation): TRL's loss divides by
        # one step's share of the batch (its samples, or tokens), so each push is that many times larger
        steps = settings.get("steps_per_batch", 1.0)
        batch["push"] = [p * steps for p in push(lengths, batch["advantage"].tolist(), **spread)]
        batch["token_weight"] = [w * steps for w in push(lengths, [1.0] * len(batch), **spread)]
        group = batch[batch["prompt_id"] == prompt_id].reset_index(drop=True)
        group = group[[*self.GROUP_COLUMNS, "token_weight", "push"]]
        mean, std = mean_std(group["reward"].tolist())
        logged = self._query(self.STEP_METRICS, {"step": step, "names": list(self.WORKED_METRICS)})
        return group, {
            "group_mean": mean,
            "group_std": std,
            "batch_std": mean_std(batch["reward"].tolist())[1],
            "samples": len(batch) / steps,  # an optimizer step's: the batch's, over the steps it is split into
            "tokens": sum(lengths) / steps,
            "metrics": dict(zip(logged["name"], logged["value"])),
        }

    # Every sample of the optimizer steps that trained one group, in a run whose batch of samples trains
    # several updates (updates/, written by core.rollouts.updates_recorded): a step's push is computed
    # over its whole batch. The latest attempt of each step; a torn last line is skipped.
    GROUP_UPDATES = """
WITH updates AS (
    SELECT * FROM read_json($paths, format = 'newline_delimited', ignore_errors = true, columns = {
        step: 'BIGINT', batch_step: 'BIGINT', prompt_id: 'VARCHAR', sample: 'BIGINT', attempt: 'BIGINT',
        advantage: 'DOUBLE', ratios: 'DOUBLE[]'})
    WHERE step IS NOT NULL AND ratios IS NOT NULL
), latest AS (SELECT step, max(attempt) AS attempt FROM updates GROUP BY step)
SELECT step, batch_step, prompt_id, sample, advantage, ratios FROM updates JOIN latest USING (step, attempt)
WHERE step IN (SELECT step FROM updates WHERE batch_step = $step AND prompt_id = $prompt_id)
ORDER BY step, prompt_id, sample
"""

    def updates(self, prompt_id: str, step: int, settings: dict | None = None) -> list[tuple[int, pd.DataFrame]]:
        """Each optimizer step that trained some of one group's samples (`step`: the step they were sampled
        for), as (that step, its rows of the group): `sample`, `advantage` (TRL's), `tokens`, the ratio
        exp(logp - old) over the sample's tokens (`ratio` their mean, `ratio_low`, `ratio_high`), `cut` (the
        share of its tokens the clip left without a push) and `push` (the mean push per token, core.loss's
        token_pushes over the step's whole batch). [] for a run that recorded none."""
        files = update_files(self.run_dir)
        if not files:
            return []
        settings = settings or run_settings({})
        rows = self._query(self.GROUP_UPDATES, {"paths": [str(f) for f in files], "step": step, "prompt_id": prompt_id})
        shown = []
        for update, batch in rows.groupby("step", sort=True):
            ratios = [list(r) for r in batch["ratios"]]
            pushes = token_pushes(
                ratios,
                batch["advantage"].tolist(),
                settings["loss_type"],
                settings["max_completion_length"],
                settings.get("epsilon_low", 0.2),
                settings.get("epsilon_high", 0.2),
            )
            mine = ((batch["batch_step"] == step) & (batch["prompt_id"] == prompt_id)).tolist()
            shown.append(
                (
                    int(update),
                    pd.DataFrame(
                        [
                            {
                                "sample": int(row.sample),
                                "advantage": row.advantage,
                                "tokens": len(r),
                                "ratio": sum(r) / len(r) if r else None,
                                "ratio_low": min(r, default=None),
                                "ratio_high": max(r, default=None),
                                "cut": sum(q == 0 for q in p) / len(p) if p and row.advantage else 0.0,
                                "push": sum(p) / len(p) if p else 0.0,
                            }
                            for row, r, p, keep in zip(batch.itertuples(), ratios, pushes, mine)
                            if keep
                        ]
                    ),
                )
            )
        return shown
