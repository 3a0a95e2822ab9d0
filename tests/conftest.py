"""Shared fixtures: offline environment, the built-in tiny model, one real tiny run, GSM8K files."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.components.v2 import manifest_scanner

from core import REPO as ROOT

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"

# Nothing in the tests may reach the network.
os.environ.update(
    HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error"
)
os.environ.pop("WANDB_API_KEY", None)
# MLflow is installed for the tracker test alone (requirements-dev.txt); requirements.txt does not have it.
# Installed, it is imported by every run (TRL's trainer imports its profiling hooks): about 0.9 s of a tiny
# run's 7 s here, in each run the suite starts. transformers' own switch keeps it out, as for a user
# without MLflow; the tracker test turns it back on for its run.
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

# Each new AppTest scans the metadata of every installed package for Streamlit components before its first
# run: about half a second here, most of what a page's render costs. The suite opens well over a hundred
# pages, each a new AppTest, and no package is installed while it runs: one scan serves them all. (Every
# worker imports Streamlit anyway: test_dashboard.py, collected by each, imports AppTest.)
manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)

# Under pytest-xdist (scripts/test.sh starts two workers), PyTorch's threads sleep while they wait for each
# other instead of spinning. This holds in each worker and in every process a worker starts. On two cores,
# two workers' spinning threads take the cores from each other and slow both by half again. Sleeping threads
# share the cores fairly, and a worker gets both cores while the other waits (docs/measured.md, "The test suite").
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The files that take longest (docs/measured.md, "The test suite") are collected first. The workers take a
# file each at a time in this order, so a long file is not left to run alone at the end. test_real_model
# leads: most of its time is one test's setup (the SmolLM2 run), which cannot be split.
LONGEST_FIRST = ["test_real_model.py", "test_dashboard_browser.py", "test_faults.py", "test_demo.py", "test_train.py"]

# Shrunken settings for real runs: 3 steps of 4 prompts x K=4 completions, 32 new tokens.
TINY_SETS = [
    "train.num_train_steps=3",
    "num_generations=4",
    "max_new_tokens=32",
    "train.per_device_train_batch_size=4",
    "train.gradient_accumulation_steps=4",
    "dataset.n_train=12",
    "dataset.n_eval=8",
    "eval.max_new_tokens=32",
]


# Tests that use these train or build a model: the full tier only (README: `pytest -m "not slow"` is the fast one).
SLOW_FIXTURES = {"tiny_run", "tiny_model_dir", "train_here", "smollm2_dir", "server"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


def lines(path) -> list[dict]:
    """Each line of a JSON-lines file the run wrote, parsed: a line that is not JSON fails the test."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_cli(*args, env=None, timeout=600):
    """`python -m core.train ...` as a real subprocess from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "core.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def train_here(monkeypatch, capsys):
    """`python -m core.train ARGS` run in this process, through its main(): returns (exit code, stderr). For
    the paths that end before a model trains, and for whole runs that a test reads through their files
    alone: a fresh interpreter spends seconds importing torch, transformers and TRL, which a worker
    imports once. It writes no train.log (what the run prints is pytest's to capture), so a test of the
    log, of signals, or of what an interpreter reads from its environment at import starts a real process
    (`run_cli`, or its own Popen). What main() changes for its process is put back after each run: the
    SIGTERM handler, the unraisable hook and the environment (the attempt's number, the trackers' folders)."""
    import signal

    from core.train import main

    monkeypatch.chdir(ROOT)  # relative config paths, as from the repo root
    monkeypatch.setenv("SIMPLE_GRPO_LOGGED", "1")  # no train.log copy of pytest's own streams

    def run(*args):
        handler, hook, environ = signal.getsignal(signal.SIGTERM), sys.unraisablehook, dict(os.environ)
        try:
            code = main([str(a) for a in args])
        finally:
            signal.signal(signal.SIGTERM, handler)
            sys.unraisablehook = hook
            for key in set(os.environ) - set(environ):  # added by main(); the rest as it was
                del os.environ[key]
            os.environ.update(environ)
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def tiny_model_dir():
    import fcntl

    from core.builtin_models import cache_root
    from core.tiny_model import build_tiny_model

    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / "tests.lock", "w") as lock:  # two workers: one builds it, the other waits and finds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """A finished run of the tiny preset (real GRPOTrainer), shared by the tests that read it: one run for
    the whole session, its workers included. The first worker to need it trains it; another waits for it."""
    import fcntl

    from core.rundir import read_status

    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the folder of this session's workers' own folders
    run_dir = shared / "tiny_run"
    with open(shared / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not run_dir.exists():
            result = run_cli(
                "--config",
                "configs/tiny_cpu.yaml",
                "--set",
                f"train.output_dir={run_dir}",
                "--set",
                "train.eval_steps=2",
                "--set",
                "rewards=[{name: gsm8k, weight: 1.0}, {name: format, weight: 0.5}]",
                *[a for s in TINY_SETS for a in ("--set", s)],
            )
            assert result.returncode == 0, result.stderr[-3000:]
    assert read_status(run_dir).get("state") == "finished", f"the shared tiny run {run_dir} did not finish"
    return run_dir


GSM8K_MISSING = "../shared/data/gsm8k is not present"
CHROMIUM_MISSING = "Debian's chromium is not installed"
# Why a test may skip here, and the one command that lets it run: said at the end of the run.
SKIP_FIXES = {
    CHROMIUM_MISSING: "apt-get update && apt-get install -y chromium (as .ci/run does)",
    GSM8K_MISSING: "put the GSM8K files (train.jsonl, test.jsonl) in ../shared/data/gsm8k/ beside the repository",
}


@pytest.fixture
def gsm8k_dir():
    if not (GSM8K / "test.jsonl").is_file():
        pytest.skip(GSM8K_MISSING)
    return GSM8K


def skip_notes(skipped) -> list[str]:
    """A line for each known reason some of `skipped` (pytest's skip reports) skipped: how many, why, and
    the command that enables them."""
    notes = []
    for reason, fix in SKIP_FIXES.items():
        count = sum(reason in str(report.longrepr) for report in skipped)
        if count:
            notes.append(f"{count} test{'s' if count > 1 else ''} skipped: {reason}; to run them: {fix}")
    return notes


def pytest_unconfigure(config):
    """The run's last lines, after pytest's own summary: what skipped for want of what, and how to enable it."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for note in skip_notes(reporter.stats.get("skipped", []) if reporter else []):
        reporter.write_line(note, yellow=True, bold=True)
