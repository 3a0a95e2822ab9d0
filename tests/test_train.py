"""End-to-end: the real GRPOTrainer on the tiny model, from the CLI to a complete run directory."""

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from core.config import ConfigError, load_config
from core.rewards import extract_model_final, score
from core.rundir import EVAL_FIELDS, ROLLOUT_FIELDS, read_status
from core.runstate import is_locked
from tests.conftest import ROOT, TINY_SETS, lines, run_cli

# The tests that start processes, train or drive the dashboard are marked slow (the full tier only): by
# their fixtures (tests/conftest.py) or by hand.


def test_tiny_run_writes_the_whole_run_directory(tiny_run):
    status = read_status(tiny_run)
    assert status["state"] == "finished" and status["exit_code"] == 0 and status["error"] is None
    assert status["global_step"] == status["max_steps"] == 3
    assert status["ended_at"] >= status["started_at"] and status["pid"] > 0

    resolved = yaml.safe_load((tiny_run / "run.yaml").read_text())
    assert resolved["train"]["num_train_steps"] == 3 and resolved["model_name"] == "builtin:tiny"

    metrics = lines(tiny_run / "metrics.jsonl")
    steps = [m["step"] for m in metrics if "reward" in m]
    assert steps == [1, 2, 3]  # logging_steps=1
    assert [m["step"] for m in metrics if "eval_accuracy" in m] == [2]  # eval_steps=2, before the last step
    assert all({"time", "loss", "reward", "reward_std", "learning_rate"} <= m.keys() for m in metrics if "reward" in m)

    # 3 steps x one generation of 4 prompts x K=4 completions
    rollouts = lines(tiny_run / "rollouts" / "rollouts.jsonl")
    assert len(rollouts) == 3 * 16
    assert all(list(r) == list(ROLLOUT_FIELDS) for r in rollouts)
    assert sorted({r["step"] for r in rollouts}) == [1, 2, 3]  # the steps of TRL's metrics: one convention
    for step in range(1, 4):
        groups = {}
        for r in rollouts:
            if r["step"] == step:
                groups.setdefault(r["prompt_id"], []).append(r["sample"])
        assert len(groups) == 4 and all(sorted(s) == [0, 1, 2, 3] for s in groups.values())
    # two rewards (gsm8k + 0.5 x format): each value recorded, the total is their weighted sum
    assert all(set(r["rewards"]) == {"gsm8k", "format"} for r in rollouts)
    assert all(r["reward"] == pytest.approx(r["rewards"]["gsm8k"] + 0.5 * r["rewards"]["format"]) for r in rollouts)
    assert {r["rewards"]["gsm8k"] for r in rollouts} <= {0.0, 0.1, 1.0}
    assert all("rewards/gsm8k/mean" in m and "rewards/format/mean" in m for m in metrics if "reward" in m)
    assert all(r["completion_tokens"] <= 32 for r in rollouts)

    summary = json.loads((tiny_run / "eval" / "summary.json").read_text())
    for phase in ("before", "after"):
        assert summary[phase]["n"] == 8 and 0 <= summary[phase]["eval_accuracy"] <= 1
        records = lines(tiny_run / "eval" / f"{phase}.jsonl")
        assert len(records) == 8
        assert all(list(r) == list(EVAL_FIELDS) for r in records)
        assert summary[phase]["eval_accuracy"] == sum(r["correct"] for r in records) / 8
    assert (tiny_run / "model" / "model.safetensors").is_file()
    assert (tiny_run / "model" / "tokenizer.json").is_file()
    log = (tiny_run / "train.log").read_text()  # started from a terminal, it keeps a log all the same
    assert (
        all(
            f"phase: {p}" in log
            for p in ("loading data", "loading model", "eval before", "training", "saving", "eval after")
        )
        and f"run finished: {tiny_run}" in log
    )
    assert status["phase"] == "eval after" and status["phase_done"] == status["phase_total"] == 8


def test_training_changed_the_parameters(tiny_run, tiny_model_dir):
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tiny_run / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert len(changed) > len(before) // 2, changed


def test_batched_eval_matches_one_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.data import synthetic_rows, to_dataset
    from core.evaluate import evaluate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ds = to_dataset(synthetic_rows(12, seed=5), tokenizer)  # prompts of different lengths: padding matters
    batched, summary = evaluate(model, tokenizer, ds, batch_size=12, max_new_tokens=32)
    single, _ = evaluate(model, tokenizer, ds, batch_size=1, max_new_tokens=32)
    assert [r["completion"] for r in batched] == [r["completion"] for r in single]
    assert [r["completion_tokens"] for r in batched] == [r["completion_tokens"] for r in single]
    assert summary["n"] == 12 and any("Final:" in r["completion"] for r in batched)
    torch.manual_seed(0)
    sampled, summary = evaluate(model, tokenizer, ds, batch_size=6, max_new_tokens=32, temperature=1.0, top_p=0.9)
    assert len(sampled) == 12 and summary["n"] == 12  # sampling runs through the same path
    assert [r["completion"] for r in sampled] != [r["completion"] for r in batched]  # it really sampled
    for r, row in zip(sampled, ds, strict=True):  # and each answer is scored by the reward's parser
        assert (r["prompt_id"], r["ground_truth"]) == (row["prompt_id"], row["answer_final"])
        assert r["prediction"] == extract_model_final(r["completion"])
        assert r["correct"] == (score(r["completion"], r["ground_truth"])[1] == 1.0)
    assert summary["eval_accuracy"] == sum(r["correct"] for r in sampled) / 12


def test_evaluate_cli_reevaluates_a_saved_model_like_the_run_did(tiny_run, tmp_path, capsys):
    # the eval process the trainer starts for vLLM and sharded models; here with the hf backend
    import shutil

    from core.evaluate import evaluate_in_subprocess

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # it writes into the run: a copy, as the other worker may be reading the shared one
    after, summary_file = lines(run / "eval" / "after.jsonl"), run / "eval" / "summary.json"
    summary = evaluate_in_subprocess(run, run / "model", phase="after")  # the run's own eval after, written anew
    assert lines(run / "eval" / "after.jsonl") == after  # same model, same greedy answers
    saved = json.loads(summary_file.read_text())
    assert saved["after"] == summary and {"before", "after"} <= saved.keys()
    # without --phase it only prints the summary; --set changes the eval set (through main(): the process
    # above was the command's real start)
    from core.evaluate import main

    assert main([str(run), "--set", "dataset.n_eval=3"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n"] == 3
    # a phase the run has is kept unless --overwrite says otherwise (the trainer's eval before, here)
    before = (run / "eval" / "before.jsonl").read_bytes()
    assert main([str(run), "--phase", "before"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the run has an eval named 'before' already ({run / 'eval' / 'before.jsonl'}): give another "
        "--phase, or add --overwrite to replace it"
    )
    assert (run / "eval" / "before.jsonl").read_bytes() == before
    assert main([str(run), "--phase", "again", "--set", "dataset.n_eval=3"]) == 0
    assert main([str(run), "--phase", "again", "--set", "dataset.n_eval=2", "--overwrite"]) == 0
    assert len(lines(run / "eval" / "again.jsonl")) == 2
    assert json.loads(summary_file.read_text())["again"]["n"] == 2
    assert sorted(p.name for p in (run / "eval").iterdir()) == [
        "after.jsonl",
        "again.jsonl",
        "before.jsonl",
        "summary.json",
    ]


def test_an_eval_that_could_not_be_written_is_refused_before_it_runs(tmp_path, capsys):
    from core.evaluate import main

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")  # never loaded: the command stops before
    config = load_config("configs/tiny_cpu.yaml", [f"train.output_dir={run}"]).to_dict()
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "eval").write_text("a file where the folder goes")
    assert main([str(run), "--phase", "again"]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot write the eval in {run / 'eval'} (File exists)"


@pytest.mark.parametrize("command", [["core.train", "--config", "configs/tiny_cpu.yaml"], ["core.evaluate"]])
def test_vllm_eval_without_cuda_is_a_clear_error(command, tiny_run, tmp_path, train_here, capsys):
    if command == ["core.evaluate"]:
        from core.evaluate import main

        code, err = main([str(tiny_run), "--set", "eval.backend=vllm"]), capsys.readouterr().err
    else:
        code, err = train_here(
            *command[1:], "--set", "eval.backend=vllm", "--set", f"train.output_dir={tmp_path / 'v'}"
        )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: eval.backend=vllm needs an NVIDIA GPU")


def test_resume_needs_a_checkpoint(tmp_path, train_here):
    (tmp_path / "run.yaml").write_text("model_name: builtin:tiny\n")
    code, err = train_here("--resume", tmp_path)
    assert code == 2
    assert err.strip().startswith(f"error: cannot resume '{tmp_path}': it needs a run.yaml and a checkpoint")
    assert not is_locked(tmp_path)  # taken for the resume, given back with the error: the folder is free
    (tmp_path / "checkpoint-1").mkdir()  # a run to resume, and a --config given that is not there
    code, err = train_here("--resume", tmp_path, "--config", tmp_path / "typo.yaml")
    assert (code, err.strip()) == (
        2,
        f"error: config file '{tmp_path / 'typo.yaml'}' does not exist: pass a YAML file such as configs/tiny_cpu.yaml",
    )


def test_weights_cut_short_are_one_line_for_a_resume_and_an_eval(tmp_path, train_here, capsys):
    from core.evaluate import main as evaluate_main

    run = tmp_path / "run"
    config = load_config("configs/tiny_cpu.yaml", [f"train.output_dir={run}"]).to_dict()
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "checkpoint-2" / "config.json").write_text("{}")
    (run / "checkpoint-2" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # cut short
    why = "model.safetensors: Error while deserializing header"
    code, err = train_here("--resume", run)
    assert code == 2 and err.startswith(f"error: cannot resume '{run}': checkpoint-2's weights are damaged ({why}")
    assert err.strip().endswith(
        "it is the run's only checkpoint, so the run cannot go on: launch it again, into another train.output_dir or "
        "once this folder is deleted"
    )
    (run / "checkpoint-1").mkdir()
    code, err = train_here("--resume", run)
    assert code == 2 and err.strip().endswith(f"delete {run / 'checkpoint-2'} to resume from the checkpoint before it")
    assert evaluate_main([str(run), "--model", str(run / "checkpoint-2")]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: could not load model '{run / 'checkpoint-2'}': its weights are damaged ({why}"
    )


def test_a_resume_to_a_step_its_checkpoint_is_past_is_refused_and_the_launch_settled(tmp_path, train_here):
    from core.runs import resume
    from core.runstate import process_identity

    run = tmp_path / "run"
    (run / "checkpoint-53").mkdir(parents=True)  # a run stopped at step 53 of 150
    config = load_config("configs/tiny_cpu.yaml", [f"train.output_dir={run}", "train.num_train_steps=150"]).to_dict()
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "status.json").write_text(json.dumps({"state": "stopped", "global_step": 53, "exit_code": 0}))
    said = (
        f"cannot resume '{run}' to step 10: its latest checkpoint is of step 53 already; train until a later step "
        "(or step 53 itself, to end the run there with its eval after)"
    )
    with pytest.raises(ConfigError) as refused:  # the Runs page's Resume: refused before anything starts
        resume(run, ROOT, num_train_steps=10)
    assert str(refused.value) == said and read_status(run)["state"] == "stopped"
    # the command itself, as a dashboard starts it: its placeholder (this process's pid) is settled, not left
    # "starting" for the Runs page to call crashed
    (run / "status.json").write_text(json.dumps({"state": "starting", **process_identity(os.getpid())}))
    code, err = train_here("--resume", run, "--set", "train.num_train_steps=10")
    assert (code, err.strip()) == (2, f"error: {said}")
    status = read_status(run)
    assert (status["state"], status["exit_code"], status["error"]) == ("failed", 2, said)


def test_a_new_run_never_writes_into_a_folder_that_holds_one(tmp_path, train_here):
    from core.rundir import run_outputs

    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("run.yaml", "status.json", "train.log"):  # what a dashboard's launch prepares: no run yet
        (folder / name).write_text("{}\n")
    assert run_outputs(folder) == []
    outputs = {"rollouts": "rollouts/rollouts.jsonl", "metrics.jsonl": "metrics.jsonl", "eval": "eval/before.jsonl"}
    for path in outputs.values():
        (folder / path).parent.mkdir(exist_ok=True)
        (folder / path).write_text('{"step": 1}\n')
    (folder / "checkpoint-2").mkdir()
    (folder / "model").mkdir()
    assert run_outputs(folder) == [*outputs, "checkpoint-2", "model"]
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    code, err = train_here("--config", "configs/tiny_cpu.yaml", "--set", f"train.output_dir={folder}")
    before[folder / ".lock"] = b""  # the one file it adds: the lock it took, to look
    assert (code, err.strip()) == (
        2,
        f"error: run folder '{folder}' holds a run already (rollouts, metrics.jsonl, eval, checkpoint-2, model): "
        f"continue it with --resume {folder}, give this run another train.output_dir, or delete that folder first",
    )
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing written
    assert not is_locked(folder)
    (folder / "checkpoint-2").rmdir()  # a run with nothing to resume (stopped before its first save)
    code, err = train_here("--config", "configs/tiny_cpu.yaml", "--set", f"train.output_dir={folder}")
    assert err.strip().endswith(": give this run another train.output_dir, or delete that folder first")
    assert "--resume" not in err
    code, err = train_here("--config", "configs/tiny_cpu.yaml", "--set", "train.output_dir=/proc/no/run")
    assert (code, err.strip()) == (
        2,
        "error: cannot write in run folder '/proc/no/run' (No such file or directory)",
    )


def test_a_resume_that_fails_before_a_step_leaves_the_runs_config_as_it_was(tmp_path, train_here):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)  # weights only (it is never reached: the data fails first)
    config = load_config("configs/tiny_cpu.yaml", [f"train.output_dir={run}"]).to_dict()
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "status.json").write_text(json.dumps({"state": "finished", "global_step": 1, "exit_code": 0}))
    before = (run / "run.yaml").read_bytes()
    data = tmp_path / "four.jsonl"  # four questions, all for training: none left for the eval before
    data.write_text('{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n' * 4)
    sets = ["dataset.name=gsm8k", f"dataset.path={data}", "dataset.n_train=4", "train.num_train_steps=13"]
    code, err = train_here("--resume", run, *(a for s in sets for a in ("--set", s)))
    assert code == 2 and "none left to evaluate on" in err
    assert (run / "run.yaml").read_bytes() == before  # a next --resume starts from the run's own settings
    status = read_status(run)
    assert (status["state"], status["attempt"]) == ("failed", 2) and "none left to evaluate on" in status["error"]


def test_a_resume_that_trained_a_step_before_it_failed_keeps_the_settings_it_trained_with(
    tiny_model_dir, tmp_path, train_here
):
    run = tmp_path / "run"
    sets = [*TINY_SETS, "train.num_train_steps=1", "train.save_steps=1", "eval.enabled=false"]
    code, err = train_here(
        "--config", "configs/tiny_cpu.yaml", *(a for s in [*sets, f"train.output_dir={run}"] for a in ("--set", s))
    )
    assert code == 0, err[-3000:]
    reward = tmp_path / "late.py"  # fails once a step of the resume is done: at step 3, after step 2 trained
    reward.write_text(
        "def f(completions, trainer_state=None, **kw):\n"
        "    if trainer_state.global_step >= 2:\n"
        "        raise RuntimeError('a reward that fails late')\n"
        "    return [0.0] * len(completions)\n"
    )
    again = ["train.num_train_steps=3", f"rewards=[{{name: '{reward}:f', weight: 1.0}}]"]
    code, err = train_here("--resume", run, *(a for s in again for a in ("--set", s)))
    assert code == 2 and "a reward that fails late" in err and read_status(run)["global_step"] == 2
    kept = yaml.safe_load((run / "run.yaml").read_text())
    assert kept["train"]["num_train_steps"] == 3 and kept["rewards"][0]["name"] == f"{reward}:f"


def wandb_records(path, block=32768):
    """The protobuf records of an offline run's .wandb file (W&B's leveldb-style log: a 7-byte
    header, then 32 KiB blocks of chunks each with a 7-byte checksum/length/type header)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block  # too little room for a chunk header: padding
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def test_tensorboard_trackio_mlflow_and_wandb_get_the_metrics_and_the_evals(tiny_model_dir, tmp_path):
    # one run reports to all four trackers at once (report_to, with wandb by runtime.use_wandb); each is
    # read back with the tracker's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, trackio_dir, mlruns = tmp_path / "tracked", tmp_path / "trackio", tmp_path / "mlruns"
    mlflow_env = {  # a local folder; MLflow back on (tests/conftest.py keeps it off elsewhere)
        "MLFLOW_TRACKING_URI": mlruns.as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "DISABLE_MLFLOW_INTEGRATION": "FALSE",
    }
    result = run_cli(
        "--config",
        "configs/tiny_cpu.yaml",
        *[a for s in TINY_SETS for a in ("--set", s)],
        "--set",
        "train.num_train_steps=2",
        "--set",
        "runtime.report_to=[tensorboard, trackio, mlflow]",
        "--set",
        "runtime.use_wandb=true",
        "--set",
        f"train.output_dir={run_dir}",
        env={"TRACKIO_DIR": str(trackio_dir), "WANDB_MODE": "offline", "WANDB_RUN_GROUP": "tests", **mlflow_env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = {m["step"]: m["reward"] for m in metrics if "reward" in m}
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())

    scalars = {}  # TensorBoard's own reader, on the event files in <run>/tensorboard
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        reader = EventAccumulator(str(events))
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in reader.Scalars(tag)})
    assert scalars["train/reward"] == pytest.approx(rewards)
    for phase in ("before", "after"):  # each figure of the eval summary, at the last step
        for key, value in summary[phase].items():
            assert scalars[f"eval/{phase}/{key}"] == {2: pytest.approx(value)}

    # Trackio's local database, read back with Trackio's own storage (a subprocess: it reads TRACKIO_DIR on import)
    read = (
        "import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
        "print(json.dumps([S.get_runs('simple_grpo'), S.get_logs('simple_grpo', 'grpo_tiny_K4_steps2')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", read],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TRACKIO_DIR": str(trackio_dir)},
    ).stdout
    runs, logs = json.loads(out.strip().splitlines()[-1])
    assert runs == ["grpo_tiny_K4_steps2"]
    logged = {log["train/global_step"]: log["train/reward"] for log in logs if "train/reward" in log}
    assert logged == pytest.approx(rewards)
    for phase in ("before", "after"):
        key = f"eval/{phase}/eval_avg_new_tokens"
        assert [log[key] for log in logs if key in log] == [pytest.approx(summary[phase]["eval_avg_new_tokens"])]

    # MLflow: one run (the eval after went to the run of the training, not to a second one), ended
    read = (
        "import json, mlflow; c = mlflow.MlflowClient(); (run,) = mlflow.search_runs(search_all_experiments=True, "
        "output_format='list'); h = lambda k: [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, k)]; "
        "print(json.dumps([run.info.run_name, run.info.status, h('reward'), "
        "{k: h(k) for k in run.data.metrics if k.startswith('eval_')}]))"
    )
    out = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env={**os.environ, **mlflow_env})
    assert out.returncode == 0, out.stderr[-2000:]
    name, state, reward, evals = json.loads(out.stdout.strip().splitlines()[-1])
    assert (name, state) == ("grpo_tiny_K4_steps2", "FINISHED")
    assert dict(reward) == pytest.approx(rewards)
    for phase in ("before", "after"):
        for key, value in summary[phase].items():
            assert evals[f"eval_{phase}/{key}"] == [[2, pytest.approx(value)]]

    # W&B, offline: its log in the run folder (not where the command ran), read record by record
    (log,) = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    records = list(wandb_records(log))
    (run,) = [r.run for r in records if r.HasField("run")]
    assert (run.project, run.run_group, run.display_name) == ("simple_grpo", "tests", "grpo_tiny_K4_steps2")
    keys = {u.key or "/".join(u.nested_key) for r in records if r.HasField("summary") for u in r.summary.update}
    assert {"eval_before/eval_accuracy", "eval_after/eval_accuracy", "train/reward"} <= keys
    assert "completions/nrows" in keys  # TRL's completions table


def test_model_that_cannot_be_loaded_fails_the_run_with_one_line(tmp_path, train_here):
    # conftest sets HF_HUB_OFFLINE=1, so a Hub id that is not cached cannot be loaded
    run_dir = tmp_path / "nohub"
    code, err = train_here(
        "--set",
        "model_name=nobody/no-such-model",
        "--set",
        f"train.output_dir={run_dir}",
        "--set",
        "dataset.name=synthetic",
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: could not load model 'nobody/no-such-model'")
    assert "builtin:tiny" in err and "Traceback" not in err
    status = read_status(run_dir)
    assert status["state"] == "failed" and "could not load model" in status["error"]


def test_a_step_trains_on_fresh_samples_unless_the_config_asks_for_reuse(tiny_model_dir, tmp_path, train_here):
    """The tiny preset with only K changed: fresh samples at every step, nothing in updates/. A run that
    asks for reuse: tests/test_loss.py (test_a_run_that_reuses_its_samples_records_each_update...)."""
    run_dir = tmp_path / "k8"
    code, err = train_here(
        "--config",
        "configs/tiny_cpu.yaml",
        "--set",
        "num_generations=8",
        "--set",
        "train.num_train_steps=4",
        "--set",
        "eval.enabled=false",
        "--set",
        f"train.output_dir={run_dir}",
    )
    assert code == 0, err[-2000:]
    sampled = [1, 2, 3, 4]
    steps = sorted(
        {json.loads(line)["step"] for line in (run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines()}
    )
    assert steps == sampled
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "frac_reward_zero_std" in m] == sampled  # TRL logs a batch where it sampled
    assert not (run_dir / "updates").exists()  # ratio 1 at every update: nothing to record


def test_grpo_passthrough_reaches_trl(tmp_path):
    from core.grpo import grpo_args

    cfg = load_config(
        ROOT / "configs" / "tiny_cpu.yaml", sets=["grpo.beta=0.04", "grpo.top_p=0.9", f"train.output_dir={tmp_path}"]
    )
    args = grpo_args(cfg, "cpu")
    assert (args.beta, args.top_p, args.num_generations, args.generation_batch_size) == (0.04, 0.9, 4, 16)
    assert args.steps_per_generation == args.gradient_accumulation_steps  # one batch of samples a step
    assert (args.max_completion_length, args.max_steps, args.report_to) == (48, cfg.train.num_train_steps, [])
    assert (args.output_dir, args.save_strategy, args.use_cpu, args.reward_weights) == (
        str(tmp_path),
        "no",
        True,
        [1.0],
    )
    # a device default may be overridden from grpo:, a field set from our own keys may not
    assert grpo_args(load_config(sets=["grpo.generation_batch_size=32"]), "cpu").generation_batch_size == 32
    with pytest.raises(ConfigError, match="'grpo.data_seed' is set from 'train.seed'"):
        load_config(sets=["grpo.data_seed=3"])


def test_two_processes(tiny_model_dir, tmp_path):
    # launch.num_processes=2: core.train becomes torchrun, and two CPU workers train together over gloo
    # to the end (accelerate launch, given an accelerate config: tests/test_runs.py, stopped mid-run)
    command = "starting the workers: -m torch.distributed.run --standalone --nproc_per_node=2 -m core.train"
    run_dir = tmp_path / "two"
    result = run_cli(
        "--config",
        "configs/tiny_cpu.yaml",
        *[a for s in TINY_SETS for a in ("--set", s)],
        "--set",
        "launch.num_processes=2",
        "--set",
        f"train.output_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run finished") == 1  # rank 0 reports, and alone writes the run's files
    assert command in result.stdout and "training with 2 process(es), MULTI_CPU" in result.stdout
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["global_step"] == 3
    rank0, rank1 = (lines(run_dir / "rollouts" / name) for name in ("rollouts.jsonl", "rollouts.rank1.jsonl"))
    assert len(rank0) == len(rank1) > 0
    assert {r["rank"] for r in rank0} == {0} and {r["rank"] for r in rank1} == {1}
    assert len(lines(run_dir / "eval" / "after.jsonl")) == 8
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_vllm_without_cuda_is_a_clear_error(tmp_path, train_here):
    code, err = train_here(
        "--config",
        "configs/tiny_cpu.yaml",
        "--set",
        "grpo.use_vllm=true",
        "--set",
        f"train.output_dir={tmp_path / 'v'}",
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: grpo.use_vllm=true needs an NVIDIA GPU")
    assert read_status(tmp_path / "v")["state"] == "failed"


@pytest.mark.slow
def test_a_stop_that_lands_in_a_finaliser_is_raised_just_after_it(capfd):
    from core.lifecycle import GracefulStop, StopRequested

    previous, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    try:
        stop = GracefulStop()

        class Finaliser:  # SIGTERM while Python runs a __del__, where an exception is only reported
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs here, between two lines of the finaliser
                    pass

        with pytest.raises(StopRequested):
            Finaliser()
            deadline = time.time() + 10
            while time.time() < deadline:  # the stop lands here (in ~0.01 s), not at some later phase boundary
                time.sleep(0.01)
            pytest.fail("the stop was lost in the finaliser")
        assert "Traceback" not in capfd.readouterr().err  # the swallowed one is not reported
        with pytest.raises(StopRequested):  # and until the run has caught it, each phase boundary raises it
            stop.check()
        stop._handle(signal.SIGTERM, None)  # a second SIGTERM while the first unwinds: the flag alone
        stop.interruptible = False  # as the run does once it has caught the stop
        stop.check()
    finally:
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, previous)


def gsm8k_length(completions, **kwargs):  # a reward that differs within a group from the first step
    return [len(c) % 7 / 6 for c in completions]


def test_lora_trains_only_the_adapters_against_no_second_model(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from core.grpo import grpo_args, lora_config

    cfg = load_config(
        ROOT / "configs" / "tiny_cpu.yaml",
        sets=[
            *TINY_SETS,
            "train.num_train_steps=2",
            "peft.r=4",
            "peft.target_modules=[q_proj, v_proj]",
            "grpo.beta=0.04",
            "train.learning_rate=1e-2",
            f"train.output_dir={tmp_path}",
        ],
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        reward_funcs=[gsm8k_length],
        args=grpo_args(cfg, "cpu"),
        peft_config=lora_config(cfg),
        train_dataset=Dataset.from_dict({"prompt": [f"{a} + {a + 2} =" for a in range(1, 9)]}),
    )
    assert trainer.ref_model is None  # beta > 0: the reference is this model with its adapters off, not a copy
    trainer.train()
    adapters, frozen = {}, {}
    for name, p in trainer.model.named_parameters():
        (adapters if "lora_" in name else frozen)[name] = p
    assert adapters and all(p.requires_grad for p in adapters.values())
    assert {n.split(".")[-4] for n in adapters} == {"q_proj", "v_proj"}  # peft.target_modules
    assert any(not torch.all(p == 0) for n, p in adapters.items() if "lora_B" in n)  # B starts at 0: it trained
    assert len(frozen) == len(before)
    for name, p in frozen.items():  # every weight of the model itself as it was
        original = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert not p.requires_grad and torch.equal(p, before[original]), name


def test_a_lora_run_saves_its_adapter_evaluates_and_resumes(tiny_model_dir, tmp_path, capsys, train_here):
    from safetensors import safe_open

    run_dir = tmp_path / "lora"
    sets = [
        *TINY_SETS,
        "train.num_train_steps=2",
        "peft.r=8",
        "train.learning_rate=1e-3",
        "train.save_steps=1",
        f"train.output_dir={run_dir}",
    ]
    code, err = train_here("--config", "configs/tiny_cpu.yaml", *[a for s in sets for a in ("--set", s)])
    assert code == 0, err[-3000:]
    model = run_dir / "model"  # PEFT's own files: the adapter alone, on the base model it names
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in model.iterdir()}
    assert not (model / "model.safetensors").exists()
    assert json.loads((model / "adapter_config.json").read_text())["r"] == 8
    with safe_open(model / "adapter_model.safetensors", "pt") as f:
        assert f.keys() and all("lora_" in key for key in f.keys())
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["after"]["n"] == 8

    # the saved adapter evaluates from its folder as the run did in memory (greedy: the same answers); this
    # command and the token view both through main() (their real starts: test_evaluate_cli_..., test_tokens.py)
    from core.evaluate import main as evaluate_main
    from core.tokens import main as tokens_main

    assert evaluate_main([str(run_dir)]) == 0, capsys.readouterr().err[-3000:]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(summary["after"])

    # the token view loads the adapter on its base: the same tokens, log-probabilities that moved
    last = json.loads((run_dir / "rollouts" / "rollouts.jsonl").read_text().splitlines()[-1])
    where = ["--step", str(last["step"]), "--prompt-id", last["prompt_id"], "--sample", str(last["sample"])]
    assert tokens_main([str(run_dir), *where, "--json"]) == 0, capsys.readouterr().err[-3000:]
    tokens = json.loads(capsys.readouterr().out)
    assert "".join(t["token"] for t in tokens).startswith(last["completion"])
    assert any(abs(t["logprob_after"] - t["logprob_before"]) > 1e-4 for t in tokens)

    # Resume continues from the adapter's checkpoint
    code, err = train_here("--resume", run_dir, "--set", "train.num_train_steps=3")
    assert code == 0, err[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m and m["attempt"] == 2] == [3]


def test_a_reward_that_raises_mid_run_ends_it_with_its_traceback_then_one_line(train_here, tiny_model_dir, tmp_path):
    (tmp_path / "mine.py").write_text("def f(prompts, completions, **kw):\n    raise RuntimeError('boom')\n")
    code, err = train_here(
        "--config",
        "configs/tiny_cpu.yaml",
        *[a for s in TINY_SETS for a in ("--set", s)],
        "--set",
        f"rewards=[{{name: {tmp_path}/mine.py:f}}]",
        "--set",
        "eval.enabled=false",
        "--set",
        f"train.output_dir={tmp_path / 'run'}",
    )
    assert code == 2 and read_status(tmp_path / "run")["state"] == "failed"
    assert f'{tmp_path}/mine.py", line 2, in f' in err  # where it raised, for whoever debugs the reward (train.log)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: reward '{tmp_path}/mine.py:f' raised RuntimeError: boom on step 1, prompt "), last


PROBE_MODULE = """
import gc
passes = []
gc.callbacks.append(probe := lambda phase, info: phase == "start" and passes.append(info["generation"]))
made = [[i] for i in range(300_000)]  # containers, as a library's import makes: passes are due
gc.callbacks.remove(probe)
"""


def test_the_collector_is_paused_while_libraries_import_then_what_they_made_is_set_aside(tmp_path, monkeypatch):
    """core.collector_paused: no pass of the collector while the block imports, however much it makes;
    then what exists is set aside for good (frozen), and the collector is as it was before, also when
    the block fails."""
    import gc
    import importlib

    from core import collector_paused

    for name in ("probe_on", "probe_off"):
        (tmp_path / f"{name}.py").write_text(PROBE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    gc.unfreeze()
    try:
        with collector_paused():
            probe = importlib.import_module("probe_on")
        assert probe.passes == [] and gc.isenabled() and gc.get_freeze_count() >= len(probe.made)
        frozen, more = gc.get_freeze_count(), [[i] for i in range(1000)]  # set aside, these would count
        with collector_paused():  # no module imported: nothing more set aside
            pass
        assert gc.get_freeze_count() < frozen + len(more) / 2
        with pytest.raises(ModuleNotFoundError), collector_paused():
            importlib.import_module("no_such_probe")
        assert gc.isenabled() and gc.get_freeze_count() < frozen + len(more) / 2
        gc.disable()
        with collector_paused():
            probe = importlib.import_module("probe_off")
        assert probe.passes == [] and not gc.isenabled()  # left off, as it was
    finally:
        gc.enable()
        gc.unfreeze()
        for name in ("probe_on", "probe_off"):
            sys.modules.pop(name, None)


class Imported(Exception):
    """Raised by a stand-in for TRL once the code under test has reached for it."""


def test_a_run_and_the_preflight_read_their_config_and_import_trl_with_the_collector_paused(tmp_path, monkeypatch):
    """core.train reads its config (whose check imports TRL's config where it sets a `grpo:` key) and its
    run imports TRL's trainer (core/grpo.py), each with the collector paused; so does the pre-flight.
    TRL here is a stand-in that records whether the collector ran when it was reached."""
    import gc
    import signal
    import types

    import core.grpo
    import core.lifecycle
    import core.preflight

    seen = []
    trl = types.ModuleType("trl")

    def reached(name):
        if name.startswith("__"):  # what `from trl import ...` asks of any module first
            raise AttributeError(name)
        seen.append((name, gc.isenabled()))
        raise Imported(name)

    trl.__getattr__ = reached
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name: builtin:tiny\ntrain:\n  output_dir: {tmp_path / 'run'}\n")  # no grpo: key
    cfg = load_config(config)
    for module in (core.lifecycle, core.preflight):  # each command's config, read with the collector paused
        real = module.load_config
        monkeypatch.setattr(
            module, "load_config", lambda *a, real=real, **k: seen.append(("config", gc.isenabled())) or real(*a, **k)
        )
    monkeypatch.setitem(sys.modules, "trl", trl)

    with pytest.raises(Imported):
        core.grpo.train(cfg, run=None)
    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    monkeypatch.setenv("SIMPLE_GRPO_LOGGED", "1")
    monkeypatch.setenv("SIMPLE_GRPO_ATTEMPT", "1")  # main() numbers a start here unless set: not for later tests
    try:
        assert core.lifecycle.main(lambda *args: "finished", "a probe", ["--config", str(config)]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
        sys.unraisablehook = hook
    with pytest.raises(Imported):
        core.preflight.main(["--config", str(config)])
    assert seen == [("GRPOTrainer", False), ("config", False), ("config", False), ("GRPOTrainer", False)]
    assert gc.isenabled()
