"""Plain TRL runs (core/trl_runs.py): a real GRPOTrainer run with log_completions=True, made by TRL's
own trainer (not core.train), listed, read into the store and opened read-only."""

import json
import shutil

import pandas as pd
import pytest

from core.doctor import diagnose
from core.runs import delete, list_runs, resume
from core.store import RunStore
from core.trl_runs import as_text, completion_files, is_trl_run


def ends_in_3(completions, **kwargs):  # two reward functions: a column each in TRL's table
    return [float(str(c).rstrip().endswith("3")) for c in completions]


def length_score(completions, **kwargs):
    return [len(str(c)) % 5 / 4 for c in completions]


def trl_run(model_dir, out, prompts, steps: int, save_strategy: str) -> None:
    """TRL's GRPOTrainer as a TRL user runs it, with log_completions=True."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        save_strategy=save_strategy,
        save_steps=2,
        log_completions=True,
        seed=1,
        bf16=False,
        reward_weights=[1.0, 0.5],  # not in TRL's files: its advantages, not ours, must show
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        reward_funcs=[ends_in_3, length_score],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
    )
    trainer.train()
    if save_strategy != "no":
        trainer.save_state()  # trainer_state.json at the top, as TRL's scripts leave it


@pytest.fixture(scope="module")
def trl_runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_root")
    trl_run(tiny_model_dir, root / "trl_text", [f"{a} + {a + 2} =" for a in range(1, 9)], 3, "steps")
    chats = [
        [{"role": "system", "content": "Add."}, {"role": "user", "content": f"What is {a} + 1?"}] for a in range(1, 9)
    ]
    trl_run(tiny_model_dir, root / "trl_chat", chats, 2, "no")  # completions only: no trainer_state.json
    return root


def tables(folder) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in completion_files(folder)], ignore_index=True)


def test_a_trl_run_is_listed_read_only(trl_runs):
    runs = {r["name"]: r for r in list_runs(trl_runs)}
    assert set(runs) == {"trl_text", "trl_chat"}
    text, chat = runs["trl_text"], runs["trl_chat"]
    assert text["read_only"].startswith("a TRL run") and chat["read_only"]
    assert (text["state"], text["step"], text["num_train_steps"]) == ("finished", 3, 3)
    assert text["model"] and text["reward"] is not None and text["eval_before"] is None
    assert chat["step"] == 2 and chat["num_train_steps"] is None  # no trainer_state.json: its steps from the files
    for action in (lambda: delete(trl_runs / "trl_text", trl_runs), lambda: resume(trl_runs / "trl_text")):
        with pytest.raises(ValueError, match="a TRL run: this dashboard did not start it"):
            action()
    assert (trl_runs / "trl_text" / "completions").is_dir()  # nothing deleted


def test_every_rollout_and_metric_of_a_trl_run_arrives(trl_runs):
    folder = trl_runs / "trl_text"
    table = tables(folder)
    store = RunStore(folder)
    store.refresh()
    assert store.count() == len(table) == 3 * 8 and store.skipped == 0
    page, total = store.rollouts_page(order="oldest", limit=100)
    assert total == len(table)
    got = sorted((int(r.step), r.completion, round(float(r.reward), 6)) for r in page.itertuples())
    want = sorted((int(r.step), r.completion, round(r.ends_in_3 + r.length_score, 6)) for r in table.itertuples())
    assert got == want  # the reward: the sum of TRL's reward columns
    first = page.iloc[0]
    rollout = store.rollout(first["prompt_id"], int(first["step"]), int(first["sample"]))
    assert set(rollout["rewards"]) == {"ends_in_3", "length_score"}
    assert rollout["ground_truth"] is None and rollout["correct"] is None and rollout["rank"] is None
    # each group: the step's samples of one prompt, with TRL's own advantages
    for (step, prompt), rows in table.groupby(["step", "prompt"], sort=False):
        group = store.group(page[page["question"] == prompt]["prompt_id"].iloc[0], int(step))
        assert len(group) == 4 and list(group["sample"]) == [0, 1, 2, 3]
        assert group["advantage"].tolist() == pytest.approx(rows["advantage"].tolist())
    # the metrics: every entry of trainer_state.json's log_history
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    series = store.metric_series(["reward", "loss"])
    for name in ("reward", "loss"):
        logged = {h["step"]: h[name] for h in history if name in h}
        assert dict(zip(*series[series["name"] == name][["step", "value"]].values.T)) == pytest.approx(logged)


def test_conversations_read_as_their_messages(trl_runs):
    folder = trl_runs / "trl_chat"
    assert is_trl_run(folder) and not (folder / "trainer_state.json").exists()
    table = tables(folder)
    store = RunStore(folder)
    store.refresh()
    assert store.count() == len(table) == 2 * 8
    page, _ = store.rollouts_page(limit=100)
    assert set(page["question"]) <= {f"What is {a} + 1?" for a in range(1, 9)}
    completions = {as_text(c, roles=False)[0] for c in table["completion"]}  # the assistant's message, as text
    assert all(len(c) == 1 and c[0]["role"] == "assistant" for c in table["completion"])
    assert set(page["completion"]) == completions and all(not c.startswith("[") for c in completions)
    prompt = store.rollout(page.iloc[0]["prompt_id"], int(page.iloc[0]["step"]), 0)["prompt"]
    assert prompt.startswith("system: Add.\n\nuser: What is")
    assert store.metric_series(["reward"]).empty  # no trainer_state.json: no metrics, and no error


def test_a_live_trl_run_is_followed_file_by_file(trl_runs, tmp_path):
    source = completion_files(trl_runs / "trl_text")
    folder = tmp_path / "live"
    (folder / "completions").mkdir(parents=True)
    store = RunStore(folder)
    assert store.refresh() == 0
    shutil.copy(source[0], folder / "completions" / source[0].name)
    torn = folder / "completions" / source[1].name
    torn.write_bytes(source[1].read_bytes()[: source[1].stat().st_size // 2])  # still being written
    assert store.refresh() == 8 and store.count() == 8  # the torn file waits
    torn.write_bytes(source[1].read_bytes())
    shutil.copy(source[2], folder / "completions" / source[2].name)
    assert store.refresh() == 16 and store.count() == 24 and store.step_range() == (1, 3)
    assert store.refresh() == 0  # each file once
    (folder / "completions" / source[2].name).unlink()  # a file that goes away takes its rows with it
    store.refresh()
    assert store.count() == 16 and store.status["state"] == "running"


def test_the_pages_open_a_trl_run_read_only(trl_runs, monkeypatch):
    from tests.test_dashboard import charts, open_page, texts, vega_views

    monkeypatch.setenv("RUNS_DIR", str(trl_runs))
    at = open_page("runs", run="trl_text")
    assert "trl_text is a TRL run: this dashboard did not start it" in texts(at)
    assert not [b for b in at.button if b.label in ("Stop", "Yes, delete it", "Launch again with these settings")]
    assert "Mean reward (TRL's reward)" in charts(at)
    at = open_page("rollouts", run="trl_text")
    assert "its completions table holds no ground truth" in texts(at)
    assert at.selectbox(key="correct").disabled
    page = at.dataframe[0].value
    assert len(page) == 24 and page["ground_truth"].isna().all()
    prompt_id, step = page.iloc[0]["prompt_id"], int(page.iloc[0]["step"])
    at = open_page("rollouts", run="trl_text", prompt_id=prompt_id, step=str(step), sample="0")
    assert "The advantage TRL logged for each sample" in texts(at) and not at.toggle
    at = open_page("rewards", run="trl_text")
    assert "records no parsed answer or correctness" in texts(at)
    assert list(vega_views(at)) == ["Mean reward ± std (all sampled completions)", "Reward histogram"]
    assert "**Steps 1–3**: the rewards" in texts(at)
    at = open_page("prompts", run="trl_chat")
    board = at.dataframe[0].value
    assert len(board) == 4 and board["n"].sum() == 16  # 2 steps of 2 prompts x K=4
    assert board["question"].str.startswith("What is").all()
    for page in ("eval", "compare", "home"):
        open_page(page, run="trl_text")  # no exception


# A TRL folder written by hand, as TRL lays it out: many steps at once, and damage TRL's files can suffer.


def write_trl_folder(folder, steps: int, clipped: float = 0.0, extra: bool = False) -> None:
    (folder / "completions").mkdir(parents=True)
    history = []
    for step in range(1, steps + 1):
        rows = {
            "step": [step] * 8,
            "prompt": [f"q{step % 3}"] * 4 + [f"q{step % 3 + 3}"] * 4,
            "completion": [f"answer {i}" for i in range(8)],
            "accuracy_reward": [1.0, 0.0] * 4,
            "advantage": [0.5, -0.5] * 4,
        }
        if extra:  # a column a reward function logged beside its score (TRL's log_extra)
            rows["tool_calls"] = [3.0] * 8
        pd.DataFrame(rows).to_parquet(folder / "completions" / f"completions_{step:05d}.parquet")
        history.append(
            {
                "step": step,
                "reward": 0.5,
                "completions/clipped_ratio": clipped,
                "loss": 0.1,
                "rewards/accuracy_reward/mean": 0.5,
                "frac_reward_zero_std": 0.0,
            }
        )
    (folder / "trainer_state.json").write_text(
        json.dumps({"global_step": steps, "max_steps": steps, "log_history": history})
    )


def test_a_file_written_at_an_evaluation_step_is_not_read_as_training(tmp_path):
    folder = tmp_path / "trl"
    write_trl_folder(folder, 5)
    store = RunStore(folder)
    store.refresh()
    assert store._query("SELECT DISTINCT step FROM rollouts ORDER BY step")["step"].tolist() == [1, 2, 3, 4, 5]
    # TRL evaluates at step 4: its log() there writes the evaluation's completions over the step's file
    pd.DataFrame(
        {
            "step": [4] * 2,
            "prompt": ["eval q"] * 2,
            "completion": ["e0", "e1"],
            "accuracy_reward": [1.0, 0.0],
            "advantage": [0.5, -0.5],
        }
    ).to_parquet(folder / "completions" / "completions_00004.parquet")
    state = json.loads((folder / "trainer_state.json").read_text())
    state["log_history"].insert(4, {"step": 4, "eval_reward": 0.5, "eval_loss": 0.2})
    (folder / "trainer_state.json").write_text(json.dumps(state))
    store.refresh()
    assert store._query("SELECT DISTINCT step FROM rollouts ORDER BY step")["step"].tolist() == [1, 2, 3, 5]
    assert store.eval_files == ["completions_00004.parquet"] and store.count() == 4 * 8
    assert "eval q" not in store._query("SELECT prompt FROM rollouts WHERE prompt IS NOT NULL")["prompt"].tolist()
    assert RunStore(folder).refresh() == 4 * 8  # a store opened anew reads the same


def test_the_doctor_judges_a_trl_run_by_what_it_records(tmp_path):
    folder = tmp_path / "trl"
    write_trl_folder(folder, 30, clipped=0.8)
    store = RunStore(folder)
    store.refresh()
    findings = {f.code: f for f in diagnose(store, {})}
    # no parsed answers: never "the format is not learned"; the truncation from TRL's own clipped_ratio
    assert "format_not_learned" not in findings and "format_only" not in findings
    assert "truncation" in findings and "the completion length limit" in findings["truncation"].message
    assert findings["truncation"].evidence["truncated_share"] == pytest.approx(0.8)


def test_a_damaged_trl_folder_is_listed_and_never_breaks_a_page(tmp_path):
    folder = tmp_path / "damaged"
    write_trl_folder(folder, 3, extra=True)
    store = RunStore(folder)
    store.refresh()
    first = store.rollouts_page(limit=1)[0].iloc[0]
    rollout = store.rollout(first["prompt_id"], int(first["step"]), int(first["sample"]))
    assert set(rollout["rewards"]) == {"accuracy_reward"}  # the reward functions TRL named, not tool_calls
    assert len(store.metric_series(["reward"])) == 3
    state = folder / "trainer_state.json"
    state.write_text('{"global_step": "three", "max_steps": [], "log_history": [{"step": true, "loss": 1}]')  # torn
    store.refresh()
    assert len(store.metric_series(["reward"])) == 3  # a half-written state: the last good one stays
    state.write_text('{"global_step": "three", "max_steps": [], "log_history": [{"step": true, "loss": 1}]}')
    store.refresh()
    (row,) = list_runs(tmp_path)
    assert row["step"] == 3 and row["num_train_steps"] is None  # the steps from the file names
    assert store.metric_series(["loss"]).empty  # a step that is no whole number: left out
    (folder / "completions" / "completions_00004.parquet").write_bytes(b"PAR1 not yet")  # being written
    pd.DataFrame({"step": [None], "prompt": [7], "completion": [float("nan")]}).to_parquet(
        folder / "completions" / "completions_00005.parquet"
    )  # odd types: read as text, the step from the name
    assert store.refresh() == 1
    assert store.step_range() == (1, 5)


def test_a_trl_run_opens_by_path_on_the_runs_page(trl_runs, tmp_path, monkeypatch):
    from dashboard.caches import opened_folders
    from tests.test_dashboard import errors_shown, open_page, texts

    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))  # the TRL runs are elsewhere
    try:
        at = open_page("runs")
        assert "No runs yet" in texts(at)
        at.text_input[0].set_value(str(tmp_path / "nowhere"))
        at.button[0].click().run()
        assert f"no folder at {tmp_path / 'nowhere'}" in errors_shown(at)
        at.text_input[0].set_value(str(trl_runs))  # the folder above the runs: no TRL run itself
        at.button[0].click().run()
        assert "is not a TRL run's output folder" in errors_shown(at)
        # as written: the globs are no Markdown (its asterisks once made the text between them italic)
        assert "a trainer_state.json (or a checkpoint-*/ with one) or completions/*.parquet" in errors_shown(at)
        at.text_input[0].set_value(str(trl_runs / "trl_text"))
        at.button[0].click().run()
        assert not at.exception and "trl_text is a TRL run: this dashboard did not start it" in texts(at)
        at = open_page("rollouts", run="trl_text")  # every page lists it now
        assert len(at.dataframe[0].value) == 24
    finally:
        opened_folders.clear()


@pytest.mark.slow
def test_an_advantage_the_page_computed_is_never_labelled_as_trls(tmp_path, monkeypatch):
    from tests.test_dashboard import open_page, texts

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    write_trl_folder(tmp_path / "logged", 2)
    write_trl_folder(tmp_path / "unlogged", 2)
    for path in completion_files(tmp_path / "unlogged"):  # a completions table without TRL's advantage column
        pd.read_parquet(path).drop(columns="advantage").to_parquet(path)
    at = open_page("rollouts", run="logged", prompt_id=_first_prompt(tmp_path / "logged"), step="1", sample="0")
    assert "The advantage TRL logged for each sample" in texts(at)
    at = open_page("rollouts", run="unlogged", prompt_id=_first_prompt(tmp_path / "unlogged"), step="1", sample="0")
    shown = texts(at)
    assert "recomputed here from the rewards by core/advantage.py" in shown and "TRL's default settings" in shown
    assert "has no advantage column" in shown and "The advantage TRL logged for each sample" not in shown
    assert "The advantages above are TRL's own" not in shown


def _first_prompt(folder) -> str:
    store = RunStore(folder)
    store.refresh()
    return store.rollouts_page(order="oldest", limit=1)[0].iloc[0]["prompt_id"]


@pytest.mark.slow  # it opens two pages
def test_a_damaged_trl_folder_says_what_it_skipped_and_reads_what_it_can(tmp_path, monkeypatch):
    from core.trl_runs import metric_records, status

    folder = tmp_path / "trl"
    write_trl_folder(folder, 4)
    # a completions file cut to half its bytes: named, with why, and its rows left out (not a silent gap)
    cut = completion_files(folder)[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    # a trainer_state.json cut mid-file, newer than an intact copy in checkpoint-4/
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "trainer_state.json").write_text((folder / "trainer_state.json").read_text())
    whole = (folder / "trainer_state.json").read_text()
    (folder / "trainer_state.json").write_text(whole[: len(whole) // 2])
    # a binary completion column: its text, not Python's b'...'
    binary = completion_files(folder)[2]
    table = pd.read_parquet(binary)
    table["completion"] = [f"answer {i} é".encode() for i in range(len(table) - 1)] + [b"broken \xff"]
    table.to_parquet(binary)
    store = RunStore(folder)
    store.refresh()
    assert store.count() == 24 and list(store.unreadable) == [cut.name] and store.unreadable[cut.name]
    texts = set(store.rollouts_page(limit=100)[0]["completion"])
    assert "answer 0 é" in texts and "broken \ufffd" in texts and not any(t.startswith("b'") for t in texts)
    assert status(folder)["max_steps"] == 4 and len(metric_records(folder)) == 4  # the intact copy's
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    from tests.test_dashboard import open_page, shown
    from tests.test_dashboard import texts as page_texts

    at = open_page("rollouts", run="trl")
    assert any(cut.name in shown(w.value) and "cannot be read" in shown(w.value) for w in at.warning)
    at = open_page("runs", run="trl")
    assert "4/4" in at.dataframe[0].value["progress"].tolist() and "No training step logged yet" not in page_texts(at)
