"""A battery of bad inputs and faults against the config, the data files, the run directory, the
store and every dashboard page; prints what was tried and how it ended.

    python -m tests.benchmarks.bench_faults            # about 200 cases, a few minutes on 2 cores

Each case is one real fault on real files (or a real process): a bad config value or file, a bad
data file, a damaged status.json / run.yaml / eval summary, a bad rollout or metrics line, a pid
that is not the run's, two trainers on one folder, kill -9 then resume. Outcomes:
- handled: a clear one-line error (ConfigError), or the fault was absorbed with nothing lost;
- lost: something already written was lost or doubled (must be 0);
- raised: a page, the store or the runs listing raised (must be 0);
- coerced: a bad line was kept with a value changed (as DuckDB's own JSON reader would cast `1.5`
  to a whole number, `true` to 1, a list or an object to text): not lost, but not skipped either;
- other: anything else (a traceback where one line was due), listed by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
logging.disable(logging.WARNING)  # Streamlit's bare-mode warnings, once per page run

from core import REPO as ROOT  # noqa: E402  (after the environment above is set)
from core.config import ConfigError, load_config  # noqa: E402
from core.data import load_rows  # noqa: E402
from core.rundir import ROLLOUT_FIELDS, read_status  # noqa: E402
from core.runs import list_runs, stop  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.dashboard_fixtures import make_runs  # noqa: E402

PAGES = ["home", "runs", "rollouts", "rewards", "prompts", "eval", "compare"]
TINY = [
    "train.num_train_steps=3",
    "num_generations=4",
    "max_new_tokens=32",
    "train.per_device_train_batch_size=4",
    "train.gradient_accumulation_steps=4",
    "dataset.n_train=12",
    "dataset.n_eval=8",
    "eval.max_new_tokens=32",
]


def one_line_error(fn) -> str:
    try:
        fn()
    except ConfigError as e:
        return "handled" if "\n" not in str(e) else "other"
    except Exception as e:  # noqa: BLE001 - a traceback where one line was due
        return f"other ({type(e).__name__}: {e})"
    return "other (accepted)"


# ---- config values, --set items and config files -----------------------------------------------


def config_cases(tmp: Path):
    sets = [
        ["num_generations=1"],
        ["num_generations=0"],
        ["num_generations=-4"],
        ["num_generations=four"],
        ["num_generations=2.5"],
        ["max_new_tokens=0"],
        ["max_new_tokens=[1]"],
        ["max_new_tokens=nan"],
        ["train.num_train_steps=0"],
        ["train.num_train_steps=-1"],
        ["train.num_train_steps=1e3x"],
        ["train.learning_rate=0"],
        ["train.learning_rate=-1"],
        ["train.learning_rate=nan"],
        ["train.learning_rate=inf"],
        ["train.learning_rate=.inf"],
        ["train.learning_rate={a: 1}"],
        ["train.per_device_train_batch_size=0"],
        ["train.gradient_accumulation_steps=0"],
        ["train.logging_steps=0"],
        ["train.save_steps=-1"],
        ["train.eval_steps=-2"],
        ["train.seed=x"],
        ["dataset.n_train=0"],
        ["dataset.n_eval=-3"],
        ["dataset.level=4"],
        ["dataset.level=0"],
        ["dataset.name=mnist"],
        ["dataset.path=/nonexistent.jsonl"],
        ["dataset.path=/dev/zero"],
        ["dataset.name=synthetic", f"dataset.path={tmp}"],
        ["eval.batch_size=0"],
        ["eval.temperature=-1"],
        ["eval.top_p=0"],
        ["eval.top_p=2"],
        ["eval.backend=tgi"],
        ["eval.vllm_gpu_memory_utilization=1.5"],
        ["eval.enabled=maybe"],
        ["runtime.use_wandb=perhaps"],
        ["launch.num_processes=0"],
        ["num_generations=3", "launch.num_processes=2"],
        ["launch.accelerate_config=/nonexistent.yaml"],
        ["model_name=./no/such/model"],
        ["model_name=builtin:huge"],
        ["num_generation=4"],
        ["train.learning_rat=1"],
        ["nosuchsection.key=1"],
        ["train=5"],
        ["grpo=5"],
        ["grpo.a.b=1"],
        ["grpo.betta=0.1"],
        ["grpo.learning_rate=0.1"],
        ["grpo.max_steps=3"],
        ["grpo.output_dir=/tmp/x"],
        ["grpo.seed=1"],
        ["grpo.loss_type=bogus"],
        ["grpo.scale_rewards=sometimes"],
        ["grpo.vllm_mode=remote"],
        ["grpo.importance_sampling_level=word"],
        ["grpo.lr_scheduler_type=nope"],
        ["grpo.optim=nope"],
        ["grpo.num_iterations=0"],
        ["grpo.num_iterations=two"],
        ["grpo.beta=.nan"],
        ["grpo.beta=[1]"],
        ["grpo.generation_batch_size=6", "num_generations=4"],
        ["grpo.logging_dir=/etc"],
        ["rewards=[]"],
        ["rewards=5"],
        ["rewards=[{weight: 1}]"],
        ["rewards=[{name: nope}]"],
        ["rewards=[{name: 'this:s'}, {name: 'this:s'}]"],
        ["rewards=[{name: 'no_such_module_xyz:f'}]"],
        ["rewards=[{name: gsm8k, weight: heavy}]"],
        ["rewards=[{name: gsm8k, extra: 1}]"],
        ["train.num_train_steps"],
        ["=5"],
    ]
    for items in sets:
        yield f"config --set {' '.join(items)}", lambda items=items: one_line_error(lambda: load_config(sets=items))
    files = {
        "invalid_yaml": b"train:\n  seed: [1, 2\n",
        "a_list": b"- 1\n- 2\n",
        "a_number": b"42\n",
        "not_utf8": b"model_name: caf\xe9\n",
        "tabs": b"train:\n\tseed: 1\n",
        "dup_section": b"train: 5\n",
        "unknown_top": b"epochs: 3\n",
        "bad_nested": b"dataset: {n_train: many}\n",
    }
    for name, data in files.items():
        path = tmp / f"{name}.yaml"
        path.write_bytes(data)
        yield f"config file {name}", lambda path=path: one_line_error(lambda: load_config(path))
    yield "config file missing", lambda: one_line_error(lambda: load_config(tmp / "missing.yaml"))


# ---- data files ---------------------------------------------------------------------------------

GOOD = '{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n'


def data_cases(tmp: Path):
    files = {
        "empty": "",
        "blank": "\n\n\n",
        "not_json": GOOD + "oops\n",
        "a_list_line": GOOD + "[1]\n",
        "a_number_line": GOOD + "7\n",
        "null_line": GOOD + "null\n",
        "no_answer": GOOD + '{"question": "q"}\n',
        "no_question": '{"answer": "#### 1"}\n' + GOOD,
        "answer_number": GOOD + '{"question": "q", "answer": 4}\n',
        "no_hashes": GOOD + '{"question": "q", "answer": "5"}\n',
        "empty_after_hashes": GOOD + '{"question": "q", "answer": "####"}\n',
        "too_few": GOOD * 2,
        "torn_last": GOOD * 5 + '{"question": "q", "ans',
        "bad_utf8": "\udcff",
        "crlf_ok_but_few": GOOD.replace("\n", "\r\n") * 2,
    }
    for name, text in files.items():
        path = tmp / f"{name}.jsonl"
        path.write_bytes(b"\xff\xfe{}\n" if text == "\udcff" else text.encode())
        yield (
            f"data file {name}",
            lambda path=path: one_line_error(
                lambda: load_rows(load_config(sets=[f"dataset.path={path}", "dataset.n_train=4"]).dataset, 0)
            ),
        )
    fifo = tmp / "fifo.jsonl"
    os.mkfifo(fifo)
    yield "data file fifo", lambda: one_line_error(lambda: load_config(sets=[f"dataset.path={fifo}"]))
    folder = tmp / "folder_without_split"
    folder.mkdir()
    yield (
        "data folder without train.jsonl",
        lambda: one_line_error(lambda: load_rows(load_config(sets=[f"dataset.path={folder}"]).dataset, 0)),
    )


# ---- damaged run directories: listing, store and every page -------------------------------------

DAMAGE = {
    "status.json": [
        "",
        "[]",
        "null",
        '"x"',
        "42",
        '{"state": "runn',
        '{"state": "exploded"}',
        '{"pid": "12", "state": "running"}',
        '{"state": "finished", "started_at": "yesterday"}',
        '{"state": "running", "pid": 0}',
        '{"state": "running", "pid": -1}',
        '{"state": "running", "pid": 1}',
        '{"state": "finished", "global_step": "3"}',
        '{"state": "finished", "max_steps": 1.5}',
        '{"state": "finished", "error": 5}',
        "\x00\x01",
        '{"state": null}',
    ],
    "run.yaml": [
        "",
        "- 1\n- 2\n",
        "train: [1, 2\n",
        "42\n",
        "train: {num_train_steps: many}\n",
        "model_name: [a]\n",
        "\xff",
    ],
    "eval/summary.json": [
        "",
        '{"before": null}',
        "[1]",
        '{"after": {"eval_accuracy": "high"}}',
        '{"before": 3}',
        "nope",
    ],
    "metrics.jsonl": [
        '{"step": "x", "loss": 1}\n{"step": 2, "loss": 0.5}\n',
        "[1]\n",
        '{"step": 1, "loss": "a"}\n',
        '{"step": 1e30, "loss": 1}\n',
        '{"step": 1, "time": "t", "loss": 1}\n',
        "\xff\xfe\n",
    ],
    "eval/after.jsonl": [
        '{"prompt_id": "e0", "correct": tr',
        '{"prompt_id": "e0", "correct": "false"}\n',
        "null\n",
        '{"prompt_id": 5, "completion_tokens": "many"}\n',
    ],
}


def page_runs(root: Path, run: str) -> list[str]:
    """The pages that raised for `run`."""
    from streamlit.testing.v1 import AppTest

    os.environ["RUNS_DIR"] = str(root)
    raised = []
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
        at.query_params["run"] = run
        if page != "home":
            at.switch_page(f"app_pages/{page}.py")
        at.run()
        if at.exception:
            raised.append(f"{page}: {at.exception[0].value}")
    return raised


def damage_cases(tmp: Path):
    for name, texts in DAMAGE.items():
        for i, text in enumerate(texts):

            def case(name=name, text=text, i=i):
                root = tmp / f"damage_{name.replace('/', '_')}_{i}"
                runs = make_runs(root)
                path = runs["learning"] / name
                path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff")
                try:
                    infos = {r["name"]: r for r in list_runs(root)}
                    store = RunStore(runs["learning"])
                    store.refresh()
                except Exception as e:  # noqa: BLE001
                    return f"raised (listing or store: {type(e).__name__}: {e})"
                if store.count() != 1024 or infos["html"]["state"] != "finished":
                    return "lost"
                raised = page_runs(root, "learning")
                return f"raised ({'; '.join(raised)})" if raised else "handled"

            yield f"damaged {name} #{i}: {text[:30]!r}", case


BAD_ROLLOUT_LINES = [
    '{"step": 1, "prom',
    "42",
    "null",
    "[1, 2]",
    '{"step": "abc", "prompt_id": "x"}',
    '{"step": 3}',
    '{"prompt_id": "p"} trailing',
    '{"step": 1, "prompt_id": "p", "rewards": [1, 2]}',
    '{"step": 18446744073709551616, "prompt_id": "p"}',
    '{"step": 1, "prompt_id": "p", "correct": "maybe"}',
    '{"step": 1, "prompt_id": "p", "reward": "high"}',
    '{"step": 1, "prompt_id": "p", "sample": 1.5}',
    '{"step": 1, "prompt_id": ["p"]}',
    '{"step": true, "prompt_id": "p"}',
    "\xff\xfe",
    "",
    '{"step": 1, "prompt_id": "p", "completion": {"a": 1}}',
    '{"step": 1, "prompt_id": "p", "rank": -1e400}',
]


def rollout_cases(tmp: Path):
    good = json.dumps(
        {
            **dict.fromkeys(ROLLOUT_FIELDS),
            "step": 0,
            "prompt_id": "p",
            "reward": 1.0,
            "sample": 0,
            "correct": True,
            "rank": 0,
            "completion": "Final: 1",
            "prediction": "1",
        }
    )
    for i, bad in enumerate(BAD_ROLLOUT_LINES):

        def case(bad=bad, i=i):
            run_dir = tmp / f"rollouts_{i}"
            (run_dir / "rollouts").mkdir(parents=True)
            lines = [good.replace('"sample": 0', f'"sample": {k}') for k in range(4)]
            text = lines[0] + "\n" + bad + "\n" + "\n".join(lines[1:]) + "\n"
            (run_dir / "rollouts" / "rollouts.jsonl").write_bytes(text.encode("utf-8", "surrogateescape"))
            try:
                store = RunStore(run_dir)
                store.refresh()
            except Exception as e:  # noqa: BLE001
                return f"raised (store: {type(e).__name__}: {e})"
            expected_skipped = 0 if not bad.strip() else 1
            if store.count() == 4 and store.skipped == expected_skipped:
                return "handled"
            if (
                store.count() == 5
                and store._query("SELECT count(*) AS n FROM rollouts WHERE completion = 'Final: 1'")["n"][0] == 4
            ):
                return "coerced (the bad line was kept, its values cast)"
            return f"lost (count {store.count()}, skipped {store.skipped})"

        yield f"rollout line {bad[:40]!r}", case
    for ending in ("\r\n",):

        def crlf(ending=ending):
            run_dir = tmp / "crlf"
            (run_dir / "rollouts").mkdir(parents=True)
            (run_dir / "rollouts" / "rollouts.jsonl").write_text(ending.join([good] * 3) + ending)
            store = RunStore(run_dir)
            store.refresh()
            return "handled" if store.count() == 3 and store.skipped == 0 else "lost"

        yield "rollout lines ending in \\r\\n", crlf


# ---- processes ----------------------------------------------------------------------------------


def process_cases(tmp: Path):
    for pid in (0, 1, -1, -4242, "123", True, 2**70, None, os.getpid()):

        def case(pid=pid):
            run_dir = tmp / f"pid_{pid}"
            run_dir.mkdir()
            (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": pid, "pid_started": 1.0}))
            sent = []
            real_kill, os.kill = os.kill, lambda p, s: sent.append(p)
            try:
                stopped = stop(run_dir)
            finally:
                os.kill = real_kill
            return "handled" if not stopped and not sent else f"other (signalled {sent})"

        yield f"stop with pid {pid!r} (not the run's process)", case


def train(run_dir: Path, *sets, wait=True):
    args = [a for s in [*TINY, *sets, f"train.output_dir={run_dir}"] for a in ("--set", s)]
    command = [sys.executable, "-m", "core.train", "--config", "configs/tiny_cpu.yaml", *args]
    if wait:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_step(run_dir: Path, step: int, proc) -> None:
    deadline = time.time() + 300
    while (read_status(run_dir).get("global_step") or 0) < step:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the run ended before the step")
        time.sleep(0.1)


def real_run_cases(tmp: Path):
    def two_trainers():
        run_dir = tmp / "two_trainers"
        first = train(run_dir, "train.num_train_steps=300", wait=False)
        try:
            wait_step(run_dir, 1, first)
            second = train(run_dir, "train.seed=7")
            ok = second.returncode == 2 and "is in use by a live run" in second.stderr
        finally:
            first.terminate()
            first.wait(timeout=120)
        return "handled" if ok and read_status(run_dir)["state"] == "stopped" else "other"

    yield "two trainers on one run folder", two_trainers

    def kill_then_resume():
        run_dir = tmp / "killed"
        proc = train(run_dir, "train.num_train_steps=8", "train.save_steps=2", wait=False)
        wait_step(run_dir, 5, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listed = {r["name"]: r["state"] for r in list_runs(tmp)}
        resumed = subprocess.run(
            [sys.executable, "-m", "core.train", "--resume", str(run_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        store = RunStore(run_dir)
        store.refresh()
        keys = store._query("SELECT step, rank, sample, prompt_id, count(*) AS n FROM rollouts GROUP BY ALL")
        if listed.get("killed") != "crashed" or resumed.returncode != 0:
            return f"other (state {listed.get('killed')}, resume exit {resumed.returncode})"
        steps = sorted(set(keys["step"]))
        return (
            "handled"
            if steps == list(range(1, 9)) and (keys["n"] == 1).all() and store.count() == 8 * 16
            else f"lost (steps {steps}, rows {store.count()})"
        )

    yield "kill -9 mid-run, then --resume", kill_then_resume

    for signals in (1, 2):

        def sigterm(signals=signals):
            run_dir = tmp / f"sigterm_{signals}"
            proc = train(run_dir, "train.num_train_steps=300", wait=False)
            wait_step(run_dir, 1, proc)
            for _ in range(signals):
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.1)
            proc.wait(timeout=120)
            status = read_status(run_dir)
            return "handled" if status.get("state") == "stopped" and (run_dir / "model").is_dir() else "other"

        yield f"SIGTERM x{signals} during training", sigterm


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    groups = [config_cases, data_cases, damage_cases, rollout_cases, process_cases, real_run_cases]
    results = []
    started = time.time()
    for group in groups:
        folder = tmp / group.__name__
        folder.mkdir()
        for name, case in group(folder):
            try:
                outcome = case()
            except Exception as e:  # noqa: BLE001 - the battery itself must finish
                outcome = f"other ({type(e).__name__}: {e})"
            results.append((group.__name__, name, outcome))
    shutil.rmtree(tmp, ignore_errors=True)
    kinds = ["handled", "lost", "raised", "coerced", "other"]
    counts = {k: sum(o.startswith(k) for _, _, o in results) for k in kinds}
    print(f"fault battery: {len(results)} cases in {time.time() - started:.0f} s (machine: {os.cpu_count()} cores)")
    print("| group | tried | handled | lost | raised | coerced | other |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for group in groups:
        mine = [o for g, _, o in results if g == group.__name__]
        print(
            f"| {group.__name__.removesuffix('_cases')} | {len(mine)} | "
            + " | ".join(str(sum(o.startswith(k) for o in mine)) for k in kinds)
            + " |"
        )
    print(f"| all | {len(results)} | " + " | ".join(str(counts[k]) for k in kinds) + " |")
    for group, name, outcome in results:
        if not outcome.startswith("handled"):
            print(f"  {group}: {name}: {outcome[:300]}")
    return 0 if counts["lost"] == counts["raised"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
