"""Run doctor: name what is going wrong in a GRPO run, with the evidence and the fix.

    python -m core.doctor runs/<run> [--json]

Pure functions over a run's store (TRL's metrics, the rollouts, the evals) and its run.yaml. Each
check looks at the run and returns a Finding or None; `diagnose` runs them all (CHECKS). A check that
has too little to go on says so ("not enough steps yet") instead of guessing. The thresholds are the
named constants below, each with why. docs/doctor.md lists the codes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.config import read_setting
from core.rundir import read_config
from core.runstate import LIVE_STATES, effective_state
from core.stats import sign_test
from core.store import RunStore
from core.trl_runs import is_run

MIN_STEPS = 10  # fewer logged steps than this: too few to tell a trend from noise
WINDOW = 0.2  # "early" and "late" are the first and the last fifth of the steps seen
TRUNCATED_SHARE = 0.3  # a third of completions cut at max_new_tokens: most of them then score "malformed"
NO_SIGNAL_SHARE = 0.6  # most groups with all K rewards equal: their advantages are 0 and they teach nothing
FORMAT_LOW = 0.2  # fewer than one completion in five ends with a `Final:` line, late in the run
FORMAT_ROSE = 0.2  # the well-formed share rose by 20 points or more ...
ACCURACY_FLAT = 0.02  # ... while accuracy rose by less than 2 points (or than its noise): the template, not the math
REWARD_ROSE = 0.05  # a rise of the mean reward that is more than noise over a fifth of the steps
DEGENERATE_SHARE = 0.3  # a third of the late completions degenerate (an empty body, repeated words)
DEGENERATE_STEPS = 500  # read at most this many steps of each fifth for that share; of a longer fifth, at least
# half as many (sampled_every): with K >= 2, 500 completions or more, a share known to within 4.5 points
LENGTH_NEAR_LIMIT = 0.9  # late mean length within 10% of max_new_tokens ...
LENGTH_WAS_BELOW = 0.7  # ... after starting below 70% of it: it grew into the limit
LENGTH_COLLAPSED = 0.3  # late mean length below 30% of the early one: answers shrink to nearly nothing
ENTROPY_COLLAPSED = 0.1  # late entropy below a tenth of the early one: the policy stops exploring
REWARD_FLAT = 0.02  # the mean reward moved by less than this (or than its noise): nothing is being learned
EVAL_P = 0.05  # eval after below before, and a sign test on the flipped questions says it is not luck
LR_TOO_LOW = 1e-8  # a learning rate this small moves no weights (a schedule that reached 0)
LR_JUMP = 1.5  # the learning rate rose by half from one step to the next: a schedule started over
MORE_TOKENS = 16  # the least max_new_tokens a fix suggests: "4+5=9\nFinal: 9" alone takes about 11 tokens
KL_FIRST = 0.04  # the KL weight (grpo.beta) a fix suggests where a run has none: the demo's, which kept seeds
# from unlearning their sums (configs/demo_cpu.yaml); a run that has one is told to double it
TRL_TEMPERATURE = 1.0  # what TRL samples at unless told: GRPOConfig's default (a test keeps it so)
TRL_LEARNING_RATE = 1e-6  # GRPOConfig's default learning rate (a test keeps it so)

SEVERITIES = ("info", "warning", "problem")


@dataclass
class Finding:
    code: str
    severity: str  # info, warning or problem
    steps: tuple[int, int] | None  # the steps it covers
    message: str  # what is happening, in one plain sentence
    evidence: dict = field(default_factory=dict)  # the figures behind it
    fix: str = ""  # the config keys to change, with values
    examples: list[dict] = field(default_factory=list)  # rollouts that show it: prompt_id, step, sample


@dataclass
class Run:
    """What the checks read: TRL's metrics per step, the rollouts' per-step figures, the evals."""

    store: RunStore
    config: dict  # settings(): the settings the checks read, each of its own type or absent
    metrics: pd.DataFrame  # step × metric name
    steps: pd.DataFrame  # RunStore.doctor_steps, indexed by step (empty without rollouts)
    groups: pd.DataFrame  # RunStore.group_signal, indexed by step
    evals: pd.DataFrame  # RunStore.eval_summary, indexed by phase (accuracy, n, ...)

    @property
    def max_tokens(self) -> int:
        return self.config.get("max_new_tokens") or 256

    @property
    def more_tokens(self) -> str:
        """The token budget a fix suggests: twice the run's, at least MORE_TOKENS."""
        return f"max_new_tokens={max(2 * self.max_tokens, MORE_TOKENS)}"

    def lacks(self, setting: str) -> bool:
        """Whether a fix's `setting` would change this run: stop_at_final=true, grpo.temperature=0.7 or a
        format reward, which it may have already."""
        rewards = [r.get("name") for r in self.config.get("rewards", []) if isinstance(r, dict)]
        return {
            "stop_at_final": not self.config.get("stop_at_final"),
            "temperature": self.temperature > 0.7,
            "format": "format" not in rewards,
        }[setting]

    @property
    def temperature(self) -> float:
        """The temperature the run samples at: its own, or TRL's default."""
        return self.config.get("grpo", {}).get("temperature", TRL_TEMPERATURE)

    def questions(self, harder: bool) -> str:
        """Harder or easier questions than the run's, as a fix: the synthetic level next to its own, GSM8K
        past level 3, level 1 below GSM8K; in words alone where the run's data is not known (a TRL run)."""
        data = self.config.get("dataset")
        name, level = (data.get("name", "gsm8k"), data.get("level", 3)) if data else (None, None)
        words = "harder" if harder else "easier"
        if name == "synthetic" and (level < 3 if harder else level > 1):
            return f"{words} questions (dataset.level={level + 1 if harder else level - 1})"
        if name == "synthetic" and harder:
            return "harder questions (GSM8K: dataset.name=gsm8k)"
        if name == "gsm8k" and not harder:
            return "easier questions (dataset.name=synthetic, dataset.level=1)"
        return f"{words} questions"

    @property
    def limit(self) -> str:
        """The completion length limit, in words: its value where the run's settings are known."""
        return (
            f"max_new_tokens ({self.max_tokens})"
            if "max_new_tokens" in self.config
            else "the completion length limit (max_completion_length)"
        )

    def degenerate(self) -> pd.Series:
        """Per step, the share of degenerate completions (RunStore.degenerate_shares), decided only for the
        first and the last fifth of the steps, which early_late reads, and of those only the steps whose
        number sampled_every divides: NaN for the steps not read; empty with too few steps."""
        steps = self.steps.index
        if len(steps) < MIN_STEPS:
            return pd.Series(dtype=float)
        n, every = window(len(steps)), sampled_every(len(steps))
        ends = [self.store.degenerate_shares(int(steps[a]), int(steps[b]), every) for a, b in ((0, n - 1), (-n, -1))]
        return pd.concat(ends).set_index("step")["degenerate"].reindex(steps)

    def series(self, *names: str) -> pd.Series:
        """The first of `names` that the run has, per step: the rollouts' own figures (RunStore.doctor_steps)
        come first, TRL's metrics next; empty when it has none of them."""
        for name in names:
            for table in (self.steps, self.metrics):
                if name in table:
                    return table[name].dropna()
        return pd.Series(dtype=float)


def window(steps: int) -> int:
    """How many steps "early" and "late" each take of `steps` (WINDOW, at least 2)."""
    return max(2, math.ceil(steps * WINDOW))


def sampled_every(steps: int) -> int:
    """Of a run of `steps` steps, the degenerate share is read from the steps whose number this divides: 1
    up to DEGENERATE_STEPS steps in a fifth (a run of 2,500 steps), then 2, 4, 8, ...: the smallest power of
    two that leaves at most DEGENERATE_STEPS of a fifth. Fixed by their number, the steps read stay the
    same as the run grows (those of 2k are among those of k), so each look decides only new steps' rows."""
    every = 1
    while window(steps) > every * DEGENERATE_STEPS:
        every *= 2
    return every


def early_late(series: pd.Series) -> tuple[float, float, tuple[int, int]] | None:
    """(mean over the first fifth of the steps, over the last fifth, the steps seen); None with fewer
    than MIN_STEPS steps."""
    if len(series) < MIN_STEPS:
        return None
    n = window(len(series))
    return float(series.iloc[:n].mean()), float(series.iloc[-n:].mean()), (int(series.index[0]), int(series.index[-1]))


def flat(series: pd.Series, least: float) -> bool:
    """Whether `series` moved less than `least` from its first fifth to its last, or less than twice the
    standard error of that difference (the step-to-step noise of K samples says no more)."""
    n = window(len(series))
    early, late = series.iloc[:n], series.iloc[-n:]
    noise = 2 * math.sqrt(early.var() / n + late.var() / n)
    return abs(late.mean() - early.mean()) < max(least, noise)


def late_from(series: pd.Series) -> int:
    """The first step of the last fifth of `series`."""
    return int(series.index[-window(len(series))])


def either(*fixes: str | bool) -> str:
    """The fixes given (those that are not False), in words: "a, b or c"."""
    given = [f for f in fixes if f]
    return given[0] if len(given) == 1 else ", ".join(given[:-1]) + " or " + given[-1]


def learning_rate(run: Run) -> float:
    """The run's learning rate: its config's; for a plain TRL run (no run.yaml) the highest it logged, or
    TRL's default."""
    logged = run.series("learning_rate")
    return run.config.get("train", {}).get("learning_rate") or (logged.max() if len(logged) else TRL_LEARNING_RATE)


def stronger_kl(run: Run) -> str:
    """A KL term to the starting model stronger than the run's own: KL_FIRST where it has none (TRL's
    default), twice its own where it has one."""
    beta = run.config.get("grpo", {}).get("beta", 0)
    return f"grpo.beta={2 * beta if beta > 0 else KL_FIRST:g}"


# ---- the checks ----------------------------------------------------------------------------------


def truncation(run: Run) -> Finding | None:
    share = run.series("truncated", "completions/clipped_ratio")
    trend = early_late(share)
    return None if trend is None else truncated(run, trend[1], trend[2], late_from(share))


def truncated(
    run: Run, share: float, steps: tuple[int, int] | None, since: int, which: str = "the late completions"
) -> Finding | None:
    """The truncation finding for a share of `which` cut at the limit (from step `since` on), or None
    below TRUNCATED_SHARE; the pre-flight (core/preflight.py) judges its samples with it too."""
    if share < TRUNCATED_SHARE:
        return None
    return Finding(
        "truncation",
        "problem" if share >= 0.5 else "warning",
        steps,
        f"{share:.0%} of {which} hit {run.limit} and were cut off before a Final: line, so they score as malformed.",
        {"truncated_share": round(share, 3), "max_new_tokens": run.config.get("max_new_tokens")},
        either(
            f"raise max_new_tokens (e.g. {run.more_tokens})",
            run.lacks("stop_at_final") and "end completions at their Final line (stop_at_final=true)",
            "ask for shorter reasoning",
        )
        if "max_new_tokens" in run.config
        else "raise max_completion_length, or ask for shorter reasoning",
        run.store.examples("truncated", since, run.max_tokens) if len(run.steps) else [],
    )


def no_signal(run: Run) -> Finding | None:
    if len(run.groups):
        share = run.groups["no_signal"] / run.groups["groups"]
    else:
        share = run.series("frac_reward_zero_std")
    trend = early_late(share)
    if trend is None:
        return None
    since = late_from(share)
    return without_signal(run, trend[1], run.groups.loc[since:] if len(run.groups) else None, trend[2], since)


def without_signal(
    run: Run,
    share: float,
    groups: pd.DataFrame | None,
    steps: tuple[int, int] | None,
    since: int,
    which: str = "the late groups",
) -> Finding | None:
    """The no_signal finding for a share of `which` whose K rewards are all equal, or None below
    NO_SIGNAL_SHARE; `groups` (RunStore.group_signal's rows from step `since` on) says why, where the
    rollouts tell which answers were right. The pre-flight judges its samples with it too."""
    if share < NO_SIGNAL_SHARE:
        return None
    judged = groups is not None and "all_right" in groups  # the rollouts say which answers were right
    flat = groups["no_signal"].sum() if judged else 0
    cut = judged and "all_truncated" in groups and groups["all_truncated"].sum() > flat / 2
    malformed = judged and groups["none_well_formed"].sum() > flat / 2
    right = judged and not malformed and groups["all_right"].sum() > groups["all_wrong"].sum()
    why = (
        "all cut off at the token limit before a Final: line"
        if cut
        else "none well formed, with no Final: line: the format fails, not the difficulty"
        if malformed
        else "all right: the questions are too easy"
        if right
        else "all wrong: the questions are too hard"
    )
    evidence = {"no_signal_share": round(share, 3), "num_generations": run.config.get("num_generations")}
    if judged:
        evidence.update(
            {
                f"{column}_groups": int(groups[column].sum())
                for column in ("all_right", "all_wrong", "none_well_formed", "all_truncated")
                if column in groups
            }
        )
    if cut:
        fix = either(
            f"give it more room ({run.more_tokens})",
            run.lacks("stop_at_final") and "end completions at their Final line (stop_at_final=true)",
            "ask for shorter reasoning",
        )
    elif malformed:
        fix = either(
            run.lacks("stop_at_final") and "stop generating at the end of the Final: line (stop_at_final=true)",
            f"give it more room ({run.more_tokens})",
            run.lacks("temperature") and "sample less wildly (grpo.temperature=0.7)",
            run.lacks("format")
            and "add a format reward (rewards=[{name: gsm8k, weight: 1.0}, {name: format, weight: 0.5}])",
        )
    else:
        fix = (
            f"use {run.questions(harder=True)}"
            if right
            else f"use {run.questions(harder=False)} or a stronger model"
            if judged
            else "questions of a difficulty the model sometimes solves, rewards that tell completions apart"
        ) + f", or more samples per prompt (num_generations={2 * (run.config.get('num_generations') or 8)})"
    return Finding(
        "no_signal",
        "problem" if share >= 0.9 else "warning",
        steps,
        f"In {share:.0%} of {which} all K completions got the same reward"
        + (f" (mostly {why})" if judged else "")
        + ", so their advantages are 0 and those steps teach "
        "nothing.",
        evidence,
        fix,
        run.store.examples("no_signal", since) if len(run.groups) else [],
    )


def format_not_learned(run: Run) -> Finding | None:
    trend = early_late(run.series("format_rate"))
    if trend is None or len(run.steps) < 2 * MIN_STEPS or trend[1] >= FORMAT_LOW:
        return None
    return Finding(
        "format_not_learned",
        "problem",
        trend[2],
        f"After {len(run.steps)} steps only {trend[1]:.0%} of the completions end with a well-formed Final: line "
        "(it was {:.0%} early on), so almost every reward is 0.".format(trend[0]),
        {"early_format_rate": round(trend[0], 3), "late_format_rate": round(trend[1], 3)},
        "add a format reward (rewards=[{name: gsm8k, weight: 1.0}, {name: format, weight: 0.5}]), or check that "
        "max_new_tokens leaves room for the Final: line",
        run.store.examples("malformed", late_from(run.series("format_rate"))),
    )


def format_only(run: Run) -> Finding | None:
    fmt, acc = early_late(run.series("format_rate")), early_late(run.series("accuracy"))
    if (
        fmt is None
        or acc is None
        or fmt[1] - fmt[0] < FORMAT_ROSE
        or acc[1] > acc[0]
        and not flat(run.series("accuracy"), ACCURACY_FLAT)
    ):
        return None
    return Finding(
        "format_only",
        "warning",
        fmt[2],
        f"The well-formed share rose from {fmt[0]:.0%} to {fmt[1]:.0%} while accuracy stayed at "
        f"{acc[0]:.0%} → {acc[1]:.0%}: the model learns the answer template, not the math.",
        {"format_rate": [round(fmt[0], 3), round(fmt[1], 3)], "accuracy": [round(acc[0], 3), round(acc[1], 3)]},
        "let correctness dominate: rewards=[{name: gsm8k, weight: 1.0}] (drop a format reward, or lower its "
        f"weight); {run.questions(harder=False)} give the model right answers to learn from",
        run.store.examples("well_formed_wrong", late_from(run.series("format_rate"))),
    )


def reward_hacking(run: Run) -> Finding | None:
    rewards = run.series("mean_reward", "reward")
    reward = early_late(rewards)
    fall = eval_fell(run) if reward is not None and reward[1] - reward[0] >= REWARD_ROSE else None
    if fall is not None:
        return Finding(
            "reward_hacking",
            "problem",
            reward[2],
            f"The mean reward rose from {reward[0]:.2f} to {reward[1]:.2f} while held-out eval accuracy fell from "
            f"{fall.before:.0%} to {fall.after:.0%} (a sign test on the flipped questions gives p = {fall.p:.3f}): "
            "the model is optimising the reward, not the task.",
            {
                "mean_reward": [round(reward[0], 3), round(reward[1], 3)],
                "eval_accuracy": [round(fall.before, 3), round(fall.after, 3)],
                "p_value": round(fall.p, 4),
            },
            "look at the late rollouts for a shortcut the reward pays for; weigh the strict reward up "
            "(rewards: gsm8k) and shaping rewards down",
            run.store.examples("well_formed_wrong", late_from(rewards)) if len(run.steps) else [],
        )
    shares = run.degenerate()
    degenerate = early_late(shares)
    # written so that a NaN share (a window emptied by a refresh between two reads) finds nothing
    if degenerate is None or not (degenerate[1] >= DEGENERATE_SHARE and degenerate[1] - degenerate[0] >= FORMAT_ROSE):
        return None
    return Finding(
        "reward_hacking",
        "problem",
        degenerate[2],
        f"{degenerate[1]:.0%} of the late completions are degenerate (a Final: line with nothing before it, or "
        f"the same few words repeated), up from {degenerate[0]:.0%}: the reward pays for a form, not reasoning.",
        {"degenerate_share": [round(degenerate[0], 3), round(degenerate[1], 3)]},
        "drop or lower shaping rewards (format, length_penalty) that such completions score on; "
        f"{stronger_kl(run)} keeps the model nearer to where it started",
        run.store.examples("degenerate", late_from(shares), every=sampled_every(len(run.steps))),
    )


def length_change(run: Run) -> Finding | None:
    length = run.series("mean_tokens", "completions/mean_length")
    trend = early_late(length)
    if trend is None:
        return None
    early, late, steps = trend
    known = "max_new_tokens" in run.config  # a plain TRL run's limit is not known here
    if known and late >= LENGTH_NEAR_LIMIT * run.max_tokens and early <= LENGTH_WAS_BELOW * run.max_tokens:
        return Finding(
            "length_explosion",
            "problem",
            steps,
            f"Completions grew from {early:.0f} to {late:.0f} tokens on average, up to the limit of "
            f"{run.max_tokens}: long, rambling (or repeated) text that gets cut off.",
            {"mean_tokens": [round(early, 1), round(late, 1)], "max_new_tokens": run.max_tokens},
            "add a length penalty (rewards: [..., {name: length_penalty, weight: 1.0}]), lower the learning rate "
            f"(train.learning_rate={learning_rate(run) / 2:g}), or {stronger_kl(run)} to stay near the starting model",
            run.store.examples("longest", late_from(length)) if len(run.steps) else [],
        )
    if early > 0 and late <= LENGTH_COLLAPSED * early:
        return Finding(
            "length_collapse",
            "warning",
            steps,
            f"Completions shrank from {early:.0f} to {late:.0f} tokens on average: the model stops reasoning "
            "and guesses.",
            {"mean_tokens": [round(early, 1), round(late, 1)]},
            f"drop length_penalty from rewards if it is there; lower the learning rate "
            f"(train.learning_rate={learning_rate(run) / 2:g})",
            run.store.examples("shortest", late_from(length)) if len(run.steps) else [],
        )
    return None


def entropy_collapse(run: Run) -> Finding | None:
    rewards = run.series("mean_reward", "reward")
    entropy, reward = early_late(run.series("entropy")), early_late(rewards)
    if entropy is None or reward is None or entropy[0] <= 0:
        return None
    if entropy[1] > ENTROPY_COLLAPSED * entropy[0] or not flat(rewards, REWARD_FLAT):
        return None
    return Finding(
        "entropy_collapse",
        "warning",
        entropy[2],
        f"The entropy of the model's token choices fell from {entropy[0]:.3f} to {entropy[1]:.3f} while the mean "
        "reward stayed flat: the model samples nearly the same completion every time and has stopped exploring.",
        {"entropy": [round(entropy[0], 4), round(entropy[1], 4)], "reward": [round(reward[0], 3), round(reward[1], 3)]},
        either(
            run.temperature < 1 and "sample more widely (grpo.temperature=1.0)",
            f"lower the learning rate (train.learning_rate={learning_rate(run) / 2:g})",
            stronger_kl(run),
        ),
    )


@dataclass
class EvalFall:
    """Held-out accuracy before and after, and the questions that flipped, where it fell beyond luck."""

    before: float
    after: float
    worse: int  # right → wrong
    better: int  # wrong → right
    p: float  # the sign test's: how likely so lopsided a split is by chance
    questions: int
    flipped: list  # the prompt ids that went right → wrong


def eval_fell(run: Run) -> EvalFall | None:
    """The fall of held-out accuracy from before to after, when a sign test on the flipped questions says
    it is unlikely to be luck (p < EVAL_P); None otherwise. The one test of noise that eval_regression and
    reward_hacking share: 1 of 16 right → 0 of 16 is no fall."""
    phases = dict(zip(run.evals.index, zip(run.evals["accuracy"], run.evals["n"])))
    if "before" not in phases or "after" not in phases or phases["after"][0] >= phases["before"][0]:
        return None
    flips = run.store.eval_flips()
    worse = int((flips["flip"] == "right → wrong").sum())
    p = sign_test(worse, len(flips) - worse)
    if p >= EVAL_P:
        return None
    flipped = flips[flips["flip"] == "right → wrong"]["prompt_id"].tolist()
    return EvalFall(
        phases["before"][0], phases["after"][0], worse, len(flips) - worse, p, int(phases["after"][1]), flipped
    )


def eval_regression(run: Run) -> Finding | None:
    fall = eval_fell(run)
    if fall is None:
        return None
    return Finding(
        "eval_regression",
        "problem",
        None,
        f"Held-out accuracy fell from {fall.before:.0%} to {fall.after:.0%} ({fall.worse} questions went right → "
        f"wrong, {fall.better} wrong → right; a sign test gives p = {fall.p:.3f}, so it is unlikely to be luck).",
        {
            "accuracy_before": round(fall.before, 3),
            "accuracy_after": round(fall.after, 3),
            "right_to_wrong": fall.worse,
            "wrong_to_right": fall.better,
            "p_value": round(fall.p, 4),
            "questions": fall.questions,
        },
        f"lower the learning rate (train.learning_rate={learning_rate(run) / 2:g}), train fewer steps, or "
        f"{stronger_kl(run)}; the Eval page shows the questions that flipped",
        [{"prompt_id": pid, "step": None, "sample": None, "eval": True} for pid in fall.flipped[:3]],
    )


def stalled(run: Run) -> Finding | None:
    lr, rewards = run.series("learning_rate"), run.series("mean_reward", "reward")
    reward = early_late(rewards)
    if reward is None or len(lr) < MIN_STEPS:
        return None
    came_down = lr.shift(1) < lr.cummax().shift(2)  # below an earlier rate: not a warm-up still climbing
    jumps = lr[((lr / lr.shift(1)) > LR_JUMP) & came_down]
    if len(jumps):
        step = int(jumps.index[0])
        return Finding(
            "stalled",
            "warning",
            (step, step),
            f"The learning rate jumped from {lr.shift(1)[step]:.2g} to {lr[step]:.2g} at step {step}: the schedule "
            "started over (a Resume with another train.num_train_steps changes the schedule's horizon).",
            {"learning_rate_before": float(lr.shift(1)[step]), "learning_rate_after": float(lr[step])},
            "resume with the run's own train.num_train_steps, or use grpo.lr_scheduler_type=constant",
        )
    late_lr = float(lr.iloc[-window(len(lr)) :].max())
    if late_lr > LR_TOO_LOW or not flat(rewards, REWARD_FLAT):
        return None
    return Finding(
        "stalled",
        "problem",
        reward[2],
        f"The mean reward is flat ({reward[0]:.3f} → {reward[1]:.3f}) and the learning rate is {late_lr:.2g}: "
        "no weight is moving.",
        {"late_learning_rate": late_lr, "reward": [round(reward[0], 3), round(reward[1], 3)]},
        "raise the learning rate (train.learning_rate=5e-6 suits a 0.5B model), or grpo.lr_scheduler_type=constant "
        "so that it does not decay to 0",
    )


CHECKS = [
    truncation,
    no_signal,
    format_not_learned,
    format_only,
    reward_hacking,
    length_change,
    entropy_collapse,
    eval_regression,
    stalled,
]
CHECKED = [check.__name__.replace("_", " ") for check in CHECKS]  # what "no problem found" covers, in words


# The run.yaml settings the checks read, and the type each is read as (config.read_setting).
SETTINGS = {
    "max_new_tokens": int,
    "num_generations": int,
    "stop_at_final": bool,
    "rewards": list,
    "train.learning_rate": float,
    "grpo.beta": float,
    "grpo.temperature": float,
    "dataset.name": str,
    "dataset.level": int,
}


def settings(config: dict) -> dict:
    """`config`'s SETTINGS, each where it can be read as its type: a run.yaml edited by hand may hold
    anything, and a setting that does not fit is read as absent (its default)."""
    kept: dict = {}
    for key, kind in SETTINGS.items():
        if (value := read_setting(config, key, kind)) is not None:
            section, _, name = key.rpartition(".")
            (kept.setdefault(section, {}) if section else kept)[name] = value
    return kept


def load(store: RunStore, config: dict) -> Run:
    config = settings(config)
    series = store.metric_series(store.metric_names())
    metrics = series.pivot_table(index="step", columns="name", values="value") if len(series) else pd.DataFrame()
    max_tokens = config.get("max_new_tokens") or 256
    steps = store.doctor_steps(max_tokens).set_index("step") if store.count() else pd.DataFrame()
    groups = store.group_signal(max_tokens).set_index("step") if store.count() else pd.DataFrame()
    if store.status.get("read_only"):  # a plain TRL run records no parsed answer or correctness (core/trl_runs.py)
        steps = steps.drop(columns=["format_rate", "accuracy"], errors="ignore")
        groups = groups.drop(columns=["all_right", "all_wrong", "none_well_formed", "all_truncated"], errors="ignore")
    steps = steps.dropna(axis=1, how="all")  # a figure the rollouts lack (token counts): TRL's metric instead
    return Run(store, config, metrics, steps, groups, store.eval_summary().set_index("phase"))


def diagnose(store: RunStore, config: dict) -> list[Finding]:
    """Every finding on the run, the worst first; "not enough steps" while there is too little."""
    run = load(store, config)
    seen = max(len(run.metrics), len(run.steps))
    if seen < MIN_STEPS:
        few = "Not enough steps yet" if effective_state(store.status) in LIVE_STATES else "Too few steps"  # ended
        return [
            Finding(
                "not_enough_steps",
                "info",
                None,
                f"{few}: {seen} logged, the doctor needs {MIN_STEPS} to tell a trend from noise.",
                {"steps": seen},
            )
        ]
    findings = [f for check in CHECKS if (f := check(run)) is not None]
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.severity))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"error: no run folder at {args.run_dir}", file=sys.stderr)
        return 2
    if not is_run(args.run_dir):
        print(
            f"error: {args.run_dir} holds no run (no run.yaml, status.json or TRL output): give a run folder such "
            "as runs/<run>",
            file=sys.stderr,
        )
        return 2
    store = RunStore(args.run_dir)
    store.refresh()
    findings = diagnose(store, read_config(args.run_dir))
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
        return 0
    if not findings:
        print("no findings: nothing the doctor knows of is going wrong")
    for f in findings:
        steps = f" (steps {f.steps[0]}–{f.steps[1]})" if f.steps else ""
        print(f"{f.severity.upper()} {f.code}{steps}: {f.message}")
        print(f"  evidence: {json.dumps(f.evidence)}")
        print(f"  fix: {f.fix}")
        for e in f.examples:
            print(
                f"  example: prompt {e['prompt_id']}"
                + (f", step {e['step']}, sample {e['sample']}" if e.get("step") is not None else " (eval)")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
