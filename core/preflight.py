"""Pre-flight: what a run of a config will see before it trains, in seconds rather than a whole run.

    python -m core.preflight --config configs/demo_cpu.yaml [--set key=value ...] [--questions N] [--json]

It loads the model as a run does (core/grpo.py), builds TRL's GRPOTrainer in a scratch folder, and has the
trainer sample and score training questions × K exactly as its steps do (the generation half of a
step, no update). The samples are recorded as rollouts and judged by the run doctor's own checks
(core/doctor.py: `truncated`, `without_signal`). Then it times real training steps, a save and an eval
batch, for the whole run's time. Exit 0 when some group got rewards that differ, 1 when none did (the
run cannot learn as configured), 2 for bad input. The report's fields: docs/preflight.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import psutil
import yaml

from core import REPO, collector_paused
from core.config import ENV_KEYS, RunConfig, load_config
from core.data import load_rows, to_dataset
from core.doctor import SEVERITIES, Finding, load, truncated, without_signal
from core.errors import ConfigError
from core.evaluate import generate_hf
from core.grpo import grpo_args, lora_config, reward_functions
from core.model import check_generation, load_model, pick_device
from core.rollouts import RolloutRecorder, logged_rewards
from core.stats import wilson_interval
from core.stop_at_final import end_at_final_line
from core.store import RunStore

SURE = 0.1  # sample until every share is known to ±0.1 (its 95% Wilson interval's half-width) ...
MIN_SAMPLES = 96  # ... from at least this many completions (a share near 1/2 of 96 is known to ±0.1) ...
SAMPLING_SECONDS = 120  # ... or while the next call would end within this long: a slow model stops with what it has
SAMPLE_ROWS = 32  # at least this many completions a generate call while sampling: a CPU makes them faster in a batch
TIMED_STEPS, TIMING_SECONDS = 3, 10  # real training steps timed: up to 3, none begun after 10 s (the last counts)
EVAL_PROBE_TOKENS = 16  # an eval batch is timed at 1 and at this many new tokens, then scaled to its budget


@dataclass
class Report:
    questions: int  # training questions sampled, each K times
    samples: int
    well_formed: float  # shares of the samples: a parsable Final line, right, cut at the token limit
    correct: float
    truncated: float
    groups_without_signal: float  # groups whose K rewards are all equal: advantage 0, nothing learned
    groups_with_signal: int  # how many groups got rewards that differ
    why_without_signal: dict  # of those groups: all right, all wrong, none well formed, all truncated
    reward_mean: float
    reward_std: float
    mean_abs_advantage: float  # TRL's own advantages of the samples
    completion_tokens: dict  # mean, median, max
    sure: dict  # each share -> its 95% Wilson interval [low, high]
    examples: dict  # a completion from a group with a signal and one from a group without
    seconds_to_start: float  # imports, data, model and trainer, as a run starts
    seconds_per_generation: float  # one generation batch of the run, as a training step makes it
    seconds_per_step: float
    seconds_per_eval: float  # one whole eval (every answer to the token budget: an upper bound)
    seconds_per_save: float
    minutes_total: float  # start, evals, steps and saves
    peak_memory_mb: float
    peak_memory_of: str  # what the peak measures: this process's RSS, or the GPU's allocations
    trl: dict  # TRL's own figures of the same samples: frac_reward_zero_std, completions/clipped_ratio
    findings: list[Finding] = field(default_factory=list)

    @property
    def can_learn(self) -> bool:
        """False when no sampled group got a signal: every group's K rewards were equal, so a step of
        these would teach nothing. A few groups with a signal can be enough for a model to start
        learning: the share is the starting model's, and it moves as the model learns (docs/measured.md)."""
        return self.groups_with_signal > 0


def preflight(cfg: RunConfig, questions: int | None = None, progress=None, started: float | None = None) -> Report:
    """The pre-flight report of `cfg`: `questions` training questions sampled K times each (by default,
    as many as SURE asks within SAMPLING_SECONDS); `progress(line)` as it goes. `started` (time.time())
    is when the process began, as a run's would: its imports count towards the time a run takes to start."""
    started = started or time.time()
    progress = progress or (lambda line: None)
    with collector_paused():  # as a run imports them (core/grpo.py)
        import transformers
        from trl import GRPOTrainer

    device = pick_device()
    check_generation(cfg, device)
    rewards = reward_functions(cfg)
    progress("loading data and model")
    train_rows, eval_rows = load_rows(cfg.dataset, cfg.train.seed, evaluates=cfg.eval.enabled)
    transformers.set_seed(cfg.train.seed)
    model, tokenizer = load_model(cfg, device)
    if cfg.stop_at_final:
        end_at_final_line(model, tokenizer)
    train_set, eval_set = to_dataset(train_rows, tokenizer), to_dataset(eval_rows, tokenizer)
    with tempfile.TemporaryDirectory(prefix="preflight-") as scratch:
        args = grpo_args(scratch_config(cfg, scratch), device)
        trainer = GRPOTrainer(
            model=model,
            args=args,
            train_dataset=train_set,
            processing_class=tokenizer,
            reward_funcs=logged_rewards(rewards, RolloutRecorder(scratch), cfg.num_generations),
            peft_config=lora_config(cfg),
        )
        seconds_to_start = time.time() - started
        advantages, trl = sample(trainer, train_set, cfg, questions, progress)
        store = RunStore(scratch)
        store.refresh()
        report = judge(store, cfg, advantages, trl)
        store.close()
        progress("timing a training step")
        report.seconds_per_generation, report.seconds_per_step = time_steps(trainer)
        report.seconds_per_save = time_save(trainer, scratch)
    report.seconds_to_start = seconds_to_start
    report.seconds_per_eval = time_eval(cfg, trainer.model, tokenizer, eval_set) if cfg.eval.enabled else 0.0
    report.minutes_total = run_seconds(cfg, report) / 60
    report.peak_memory_mb, report.peak_memory_of = peak_memory(device)
    return report


def scratch_config(cfg: RunConfig, folder: str) -> RunConfig:
    """`cfg` training into scratch `folder`: no checkpoint, no tracker, no progress bar."""
    scratch = copy.deepcopy(cfg)
    scratch.train.output_dir, scratch.train.save_steps = folder, 0
    scratch.runtime.report_to, scratch.runtime.use_wandb = [], False
    scratch.grpo["disable_tqdm"] = True
    return scratch


def sample(trainer, train_set, cfg: RunConfig, questions: int | None, progress) -> tuple[list[float], dict]:
    """Sample training questions × K through the trainer's own generation and scoring (the logged
    rewards record each completion); returns TRL's advantages and its own figures of the samples."""
    k = cfg.num_generations
    per_call = max(trainer.args.generation_batch_size // k, math.ceil(SAMPLE_ROWS / k))
    order = random.Random(cfg.train.seed).sample(
        range(len(train_set)), min(questions or len(train_set), len(train_set))
    )
    trainer.model.train()  # TRL samples with the training settings in training mode
    advantages, figures, flat, started = [], {}, 0, time.perf_counter()
    for start in range(0, len(order), per_call):
        rows = [train_set[i] for i in order[start : start + per_call]]
        out = trainer._generate_and_score_completions([row for row in rows for _ in range(k)])  # TRL's step, first half
        batch = out["advantages"].tolist()
        advantages += batch
        for name in ("frac_reward_zero_std", "completions/clipped_ratio"):
            figures.setdefault(name, []).append(trainer._metrics["train"][name][-1])
        flat += flat_groups(batch, k)
        done, spent = start + len(rows), time.perf_counter() - started
        progress(f"sampled {done} questions × {k} ({spent:.0f} s)")
        if questions is None and (spent * (done + per_call) / done > SAMPLING_SECONDS or sure_enough(flat, done, k)):
            break  # sure enough, or another call would end past the time allowed
    return advantages, {name: sum(values) / len(values) for name, values in figures.items()}


def flat_groups(advantages: list[float], k: int) -> int:
    """The groups (each K advantages in a row) whose rewards were all equal: their K advantages are the
    same number (0 but for rounding, which dividing by TRL's 1e-4 can make 1e-4), however TRL scales them.
    (TRL's frac_reward_zero_std is no count of them under scale_rewards=batch: the whole batch's flag.)"""
    return sum(len(set(advantages[g : g + k])) == 1 for g in range(0, len(advantages), k))


def sure_enough(flat: int, groups: int, k: int) -> bool:
    """Whether MIN_SAMPLES are in and the share of groups without a signal (`flat` of `groups`) is known
    to SURE; the shares of completions, of K times as many, are then known at least as well."""
    low, high = wilson_interval(flat, groups)
    return groups * k >= MIN_SAMPLES and (high - low) / 2 <= SURE


def judge(store: RunStore, cfg: RunConfig, advantages: list[float], trl: dict) -> Report:
    """The report's figures from the recorded samples (the store's own queries, as the doctor reads a
    run), and the doctor's truncation and no_signal checks on them."""
    config = cfg.to_dict()
    run = load(store, config)
    steps, groups = run.steps.iloc[0], run.groups.iloc[0]
    n, count = int(steps["n"]), int(groups["groups"])
    shares = {"well_formed": steps["format_rate"], "correct": steps["accuracy"], "truncated": steps["truncated"]}
    sure = {name: wilson_interval(round(value * n), n) for name, value in shares.items()}
    sure["groups_without_signal"] = wilson_interval(int(groups["no_signal"]), count)
    lengths = store.completion_lengths()
    which = "the starting model's completions"
    findings = [
        f
        for f in (
            truncated(run, shares["truncated"], None, 1, which),
            without_signal(run, groups["no_signal"] / count, run.groups, None, 1, "the starting model's groups"),
        )
        if f is not None
    ]
    for f in findings:
        f.examples = []  # the samples live in a scratch folder: the report carries its examples itself
    return Report(
        questions=count,
        samples=n,
        **{name: round(float(value), 4) for name, value in shares.items()},
        groups_without_signal=round(groups["no_signal"] / count, 4),
        groups_with_signal=int(count - groups["no_signal"]),
        why_without_signal={
            name: int(groups[name]) for name in ("all_right", "all_wrong", "none_well_formed", "all_truncated")
        },
        reward_mean=round(float(steps["mean_reward"]), 4),
        reward_std=round(float(store.step_aggregates()["std_reward"].iloc[0]), 4),
        mean_abs_advantage=round(sum(map(abs, advantages)) / len(advantages), 4),
        completion_tokens=lengths,
        sure={name: [round(lo, 3), round(hi, 3)] for name, (lo, hi) in sure.items()},
        examples={kind: example(store, kind) for kind in ("best_of_signal", "no_signal")},
        seconds_to_start=0.0,
        seconds_per_generation=0.0,
        seconds_per_step=0.0,
        seconds_per_eval=0.0,
        seconds_per_save=0.0,
        minutes_total=0.0,
        peak_memory_mb=0.0,
        peak_memory_of="",
        trl={name: round(value, 4) for name, value in trl.items()},
        findings=sorted(findings, key=lambda f: -SEVERITIES.index(f.severity)),
    )


def example(store: RunStore, kind: str) -> dict | None:
    """One sampled completion of a kind of RunStore.examples: its question, completion, reward and its
    group's rewards; None when there is none."""
    found = store.examples(kind, limit=1)
    if not found:
        return None
    row = store.rollout(found[0]["prompt_id"], found[0]["step"], found[0]["sample"])
    group = store.group(found[0]["prompt_id"], found[0]["step"])
    return {
        "question": row["question"],
        "completion": row["completion"],
        "reward": row["reward"],
        "group_rewards": [round(r, 3) for r in group["reward"]],
    }


class StepTimer:
    """A trainer callback that times each training step and stops training after TIMED_STEPS of them,
    or once TIMING_SECONDS have gone by."""

    def __init__(self):
        self.steps: list[float] = []
        self.began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self.began)
        control.should_training_stop = len(self.steps) >= TIMED_STEPS or sum(self.steps) >= TIMING_SECONDS


def time_steps(trainer) -> tuple[float, float]:
    """(seconds of one generation batch, seconds per training step) from real training steps: the last
    step timed, with the generation it made counted as often as the run makes one per step."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    timer = type("StepTimer", (StepTimer, TrainerCallback), {})()
    generations: list[tuple[int, float]] = []  # (the step it was made in, seconds)
    generate = trainer._generate_and_score_completions

    def timed(inputs):
        began = time.perf_counter()
        out = generate(inputs)
        generations.append((len(timer.steps), time.perf_counter() - began))
        return out

    trainer._generate_and_score_completions = timed
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)  # TRL's logs would print on stdout, which holds the report
    trainer.train()
    args = trainer.args
    per_step = args.gradient_accumulation_steps / (args.steps_per_generation * trainer.num_iterations)
    generation = generations[-1][1]
    in_last = sum(seconds for step, seconds in generations if step == len(timer.steps) - 1)
    return generation, timer.steps[-1] - in_last + per_step * generation


def time_save(trainer, folder: str) -> float:
    """Seconds to save the model as the run's end does (trainer.save_model)."""
    began = time.perf_counter()
    trainer.save_model(os.path.join(folder, "model"))
    return time.perf_counter() - began


def time_eval(cfg: RunConfig, model, tokenizer, eval_set) -> float:
    """Seconds for the run's whole eval, every answer taken to the token budget (an upper bound: a batch
    ends early once each of its answers has): one eval batch timed at 1 and at EVAL_PROBE_TOKENS new
    tokens, the difference scaled to the budget."""
    e, rows = cfg.eval, len(eval_set)
    if rows == 0:
        return 0.0
    budget = e.max_new_tokens or cfg.max_new_tokens
    prompts = eval_set["prompt"][: e.batch_size]

    def seconds(tokens: int) -> float:
        began = time.perf_counter()
        generate_hf(model, tokenizer, prompts, e.batch_size, tokens, e.temperature, e.top_p)
        return time.perf_counter() - began

    probe = min(EVAL_PROBE_TOKENS, budget)
    once, longer = seconds(1), seconds(probe)
    per_token = (longer - once) / (probe - 1) if probe > 1 else 0.0
    return (once + per_token * (budget - 1)) * rows / len(prompts)


def run_seconds(cfg: RunConfig, report: Report) -> float:
    """The whole run's seconds: its start, the evals (before, during, after), the steps, the saves."""
    steps, t = cfg.train.num_train_steps, cfg.train
    evals = (2 + len(range(t.eval_steps, steps, t.eval_steps)) if t.eval_steps else 2) if cfg.eval.enabled else 0
    checkpoints = steps // t.save_steps if t.save_steps else 0
    weights_only = cfg.grpo.get("save_only_model", False)
    saves = 1 + checkpoints * (1 if weights_only else 3)  # a full checkpoint adds AdamW's two moments
    return (
        report.seconds_to_start
        + evals * report.seconds_per_eval
        + steps * report.seconds_per_step
        + saves * report.seconds_per_save
    )


def peak_memory(device: str) -> tuple[float, str]:
    """The peak memory so far, in MB (10**6 bytes), and what it measures."""
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 1e6, 1), "GPU memory allocated by torch"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return round(peak * (1 if sys.platform == "darwin" else 1024) / 1e6, 1), "this process's peak resident memory"


def in_subprocess(cfg: RunConfig, progress=None, questions: int | None = None) -> tuple[dict | None, str]:
    """`python -m core.preflight --json` on `cfg` in a process of its own (the dashboard keeps no model
    in its memory): (its report, or None, and the line that says why); `progress(line)` for each of its
    progress lines."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}  # the settings are the form's, all of them
    with tempfile.TemporaryDirectory(prefix="preflight-") as folder:
        config, out = os.path.join(folder, "config.yaml"), os.path.join(folder, "report.json")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg.to_dict(), f)
        command = [sys.executable, "-m", "core.preflight", "--config", config, "--json"]
        said = ""
        with (
            open(out, "w", encoding="utf-8") as stdout,
            subprocess.Popen(
                command + (["--questions", str(questions)] if questions else []),
                cwd=REPO,
                env=env,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            ) as process,
        ):
            try:
                for line in process.stderr:
                    if line.startswith("preflight: "):
                        if progress:  # where a page's script stops when it is left or run again
                            progress(line.removeprefix("preflight: ").strip())
                    elif line.strip():
                        said = line.strip()
                process.wait()
            finally:
                if process.poll() is None:  # its page stopped (left, or run again): the check ends with it
                    process.kill()
        if process.returncode in (0, 1):
            with open(out, encoding="utf-8") as f, contextlib.suppress(ValueError):
                return json.loads(f.read()), ""  # no report: it failed (a traceback exits 1 too)
    if process.returncode < 0:
        return None, f"the pre-flight was killed by signal {-process.returncode} (out of memory?)"
    return None, said.removeprefix("error: ") or f"the pre-flight stopped with exit code {process.returncode}"


def as_json(report: Report) -> dict:
    return {**asdict(report), "can_learn": report.can_learn, "signal": signal(report), "verdict": verdict(report)}


def show(report: Report) -> str:
    """The report as text, for the terminal."""
    s = report.sure
    lines = [
        f"{report.questions} questions × {report.samples // max(report.questions, 1)} samples "
        f"(95% intervals in brackets)"
    ]
    for name in ("well_formed", "correct", "truncated", "groups_without_signal"):
        lines.append(f"  {name.replace('_', ' ')}: {getattr(report, name):.0%} [{s[name][0]:.0%}–{s[name][1]:.0%}]")
    why = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in report.why_without_signal.items() if n)
    lines += [
        f"    of those groups (a group can be several): {why or 'none'}",
        f"  reward: mean {report.reward_mean:.3f}, std {report.reward_std:.3f}; "
        f"mean |advantage| {report.mean_abs_advantage:.3f}",
        f"  completion tokens: mean {report.completion_tokens['mean']:.1f}, "
        f"median {report.completion_tokens['median']:g}, max {report.completion_tokens['max']:g}",
        f"time: {report.seconds_per_step:.1f} s a step (a generation batch {report.seconds_per_generation:.1f} s), "
        f"an eval up to {report.seconds_per_eval:.1f} s, a save {report.seconds_per_save:.1f} s: "
        f"the whole run about {report.minutes_total:.1f} minutes",
        f"memory: peak {report.peak_memory_mb:,.0f} MB ({report.peak_memory_of})",
    ]
    for kind, label in (("best_of_signal", "from a group with a signal"), ("no_signal", "from a group without")):
        if report.examples.get(kind):
            e = report.examples[kind]
            lines.append(f"example {label} (reward {e['reward']:g}, its group {e['group_rewards']}):")
            lines += ["  | " + line for line in e["completion"].splitlines() or [""]]
    for f in report.findings:
        lines += [f"{f.severity.upper()} {f.code}: {f.message}", f"  fix: {f.fix}"]
    lines.append(f"verdict: {verdict(report)}")
    return "\n".join(lines)


def signal(report: Report) -> str:
    """`none` (no group got rewards that differ), `weak` (a no_signal finding stands) or `expected`."""
    if not report.can_learn:
        return "none"
    return "weak" if any(f.code == "no_signal" for f in report.findings) else "expected"


def verdict(report: Report) -> str:
    """One line: will this run get a learning signal from its first steps?"""
    return {
        "none": "this run cannot learn as configured: no sampled group got rewards that differ (see the findings)",
        "weak": f"a weak signal: only {report.groups_with_signal} of {report.questions} groups got rewards "
        "that differ, so the first steps teach little (see the findings)",
        "expected": "a learning signal is expected",
    }[signal(report)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.preflight", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config, e.g. configs/demo_cpu.yaml (defaults apply without one)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set max_new_tokens=64 (repeatable)",
    )
    parser.add_argument(
        "--questions",
        type=int,
        metavar="N",
        help=f"sample N training questions (default: until each share is known to ±{SURE:g}, "
        f"at most about {SAMPLING_SECONDS} s of sampling)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (docs/preflight.md)")
    args = parser.parse_args(argv)
    try:
        if args.questions is not None and args.questions < 1:
            raise ConfigError(f"--questions {args.questions} must be at least 1")
        with collector_paused():  # as a run reads its config (core/lifecycle.py)
            cfg = load_config(args.config, args.set, env=os.environ)
        # the report is all that goes to stdout: what libraries print there goes to stderr (transformers
        # prints "[INFO] Running in WANDB offline mode" when WANDB_MODE=offline)
        with contextlib.redirect_stdout(sys.stderr):
            report = preflight(
                cfg,
                args.questions,
                progress=lambda line: print(f"preflight: {line}", file=sys.stderr, flush=True),
                started=psutil.Process().create_time(),
            )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(report), indent=2) if args.json else show(report))
    return 0 if report.can_learn else 1


if __name__ == "__main__":
    sys.exit(main())
