"""Data sources (synthetic, local files, the Hub when offline) and the prompt columns."""

import json
import re

import pytest

from core.config import ConfigError, DatasetConfig
from core.data import load_rows, synthetic_rows, to_dataset
from core.prompts import SYSTEM_PROMPT, prompt_id
from core.rewards import extract_gsm8k_gt


def test_system_prompt_is_verbatim():
    assert SYSTEM_PROMPT == (
        "You are a helpful assistant. Solve the problem.\nShow your reasoning briefly.\n"
        "At the end, output exactly one line in this format:\nFinal: <number>\n"
        "Do not write anything after the Final line."
    )


def test_synthetic_is_deterministic_varied_and_gsm8k_format():
    rows = synthetic_rows(200, seed=3)
    assert rows == synthetic_rows(200, seed=3)
    assert rows != synthetic_rows(200, seed=4)
    assert len({r["question"] for r in rows}) == 200
    templates = {
        re.sub(
            r"\d+|"
            + "|".join(
                ["Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Liam"]
            ),
            "#",
            r["question"],
        )[:25]
        for r in rows
    }
    assert len(templates) >= 6  # varied templates, not one sentence with new numbers
    for row in rows:
        steps = re.findall(r"<<([^=]+)=(-?\d+)>>", row["answer"])
        assert len(steps) >= 2  # multi-step
        for expr, result in steps:
            assert eval(expr.replace("/", "//")) == int(result)  # every worked step is right
        assert extract_gsm8k_gt(row["answer"]) == steps[-1][1]  # and the answer is the last result
        assert int(steps[-1][1]) >= 0


def test_synthetic_eval_is_disjoint_from_train():
    train, evaluation = load_rows(DatasetConfig(name="synthetic", n_train=300, n_eval=100), seed=0)
    assert len(train) == 300 and len(evaluation) == 100
    assert not {r["question"] for r in train} & {r["question"] for r in evaluation}


def test_local_file_folder_and_parquet(tmp_path):
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(10)]
    file = tmp_path / "mine.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, evaluation = load_rows(DatasetConfig(path=str(file), n_train=6, n_eval=3), seed=0)
    assert train == rows[:6] and evaluation == rows[6:9]  # one file: evaluate on the rows after training

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(file.read_text())
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows[::-1]), folder / "test.parquet")
    train, evaluation = load_rows(DatasetConfig(path=str(folder), n_train=4, n_eval=2), seed=0)
    assert train == rows[:4] and evaluation == rows[::-1][:2]


def test_local_file_with_wrong_columns(tmp_path):
    file = tmp_path / "bad.jsonl"
    file.write_text('{"q": "x", "a": "y"}\n')
    with pytest.raises(ConfigError, match="line 1 has no text 'question' and 'answer' \\(it has a, q\\)"):
        load_rows(DatasetConfig(path=str(file)), seed=0)


def test_real_gsm8k_folder(gsm8k_dir):
    train, evaluation = load_rows(DatasetConfig(path=str(gsm8k_dir), n_train=5, n_eval=4), seed=0)
    assert len(train) == 5 and len(evaluation) == 4
    assert train[0]["question"].startswith("Natalia sold clips")
    assert extract_gsm8k_gt(evaluation[0]["answer"]) == "18"


def test_unreachable_hub_says_what_to_do_instead():
    # conftest sets HF_HUB_OFFLINE=1: the same failure a machine without network gets
    with pytest.raises(ConfigError) as info:
        load_rows(DatasetConfig(name="gsm8k", n_train=2, n_eval=2), seed=0)
    message = str(info.value)
    assert "could not load openai/gsm8k" in message and "dataset.path" in message and "tiny_cpu.yaml" in message


def test_dataset_columns_and_prompt_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = synthetic_rows(3, seed=0)
    ds = to_dataset(rows, tokenizer)
    assert ds.column_names == ["prompt", "question", "answer_final", "prompt_id"]
    first = ds[0]
    assert SYSTEM_PROMPT in first["prompt"] and first["prompt"].endswith("<|im_start|>assistant\n")
    assert rows[0]["question"] in first["prompt"]
    assert first["answer_final"] == extract_gsm8k_gt(rows[0]["answer"])
    assert first["prompt_id"] == prompt_id(first["prompt"]) == to_dataset(rows, tokenizer)[0]["prompt_id"]
    assert len(set(ds["prompt_id"])) == 3


@pytest.mark.parametrize("level, steps", [(1, 1), (2, 1), (3, 2)])
def test_synthetic_levels(level, steps):
    rows = synthetic_rows(100, seed=1, level=level)
    for row in rows:
        found = re.findall(r"<<([^=]+)=(-?\d+)>>", row["answer"])
        assert len(found) == steps
        assert all(eval(expr.replace("/", "//")) == int(result) for expr, result in found)
    numbers = [int(n) for row in rows for n in re.findall(r"\d+", row["question"])]
    if level == 1:
        assert max(numbers) <= 9  # single digits only
    if level == 2:
        assert max(numbers) > 9


@pytest.mark.slow  # about 3 s: it draws 900,000 questions before it gives up
def test_level_one_runs_out_of_questions_with_a_clear_error():
    with pytest.raises(ConfigError, match="synthetic level 1 ran out of distinct questions after 7776"):
        synthetic_rows(8000, seed=0, level=1)
