"""The reward's exact rules (docs/config.md, "Reward"), table-driven, and its parser on the real GSM8K files."""

import json
import re

import pytest

from core.rewards import (
    check_reward,
    extract_gsm8k_gt,
    extract_model_final,
    format_reward,
    gsm8k_lenient_reward,
    gsm8k_reward,
    length_penalty,
    resolve_reward,
)

FINAL_CASES = [
    ("Final: 18", "18"),  # the plain format
    ("3 + 15 = 18\nFinal: 18", "18"),  # reasoning first, Final line last
    ("Final:18", "18"),  # spaces after the colon are optional
    ("Final:    18", "18"),  # several spaces are fine too
    ("Final: 18  \n\n", "18"),  # trailing whitespace is removed first
    ("Final: 1,080", "1080"),  # commas are removed first
    ("Final: -7", "-7"),  # negative numbers
    ("Final: 2.50", "2.50"),  # decimals keep their digits
    ("Final: 18.", None),  # nothing may follow the number, not even a period
    ("Final: 18 dollars", None),  # ... nor a unit
    ("Final: **18**", None),  # ... nor markdown
    ("Final: $18", None),  # a currency sign before the number is a miss
    ("final: 18", None),  # case-sensitive
    ("Final: 18\nThanks!", None),  # the Final line must be the last thing
    ("The answer is 18", None),  # no Final line at all
    ("Final: .5", None),  # a number needs digits before the point
    ("Final: 1e3", None),  # no exponents
    ("Final: 12\nFinal: 13", "13"),  # the last Final line counts
    ("", None),  # empty completion
]


@pytest.mark.parametrize("text, expected", FINAL_CASES)
def test_extract_model_final(text, expected):
    assert extract_model_final(text) == expected


GT_CASES = [
    ("She has 3 + 4 = <<3+4=7>>7.\n#### 7", "7"),  # the usual GSM8K answer
    ("...\n#### 1,080", "1080"),  # commas removed
    ("...\n####  -3 ", "-3"),  # stripped
    ("no marker here", None),  # not a GSM8K answer
]


@pytest.mark.parametrize("answer, expected", GT_CASES)
def test_extract_gsm8k_gt(answer, expected):
    assert extract_gsm8k_gt(answer) == expected


REWARD_CASES = [
    ("Final: 18", "18", 1.0),  # correct
    ("Final: 18.00", "18", 1.0),  # numeric comparison: 18.00 == 18
    ("Final: 18", "18.0", 1.0),  # ... either way round
    ("Final: 1,080", "1080", 1.0),  # commas do not matter
    ("Final: 12345678901234567890", "12345678901234567890", 1.0),  # exact for long integers
    ("Final: 12345678901234567891", "12345678901234567890", 0.1),  # ... floats would call these equal
    ("Final: 0.1000000000000000001", "0.1", 0.1),  # exact for long decimals too
    ("Final: 17", "18", 0.1),  # well-formed but wrong
    ("Final: 17", None, 0.1),  # well-formed, no ground truth
    ("Final: 17", "n/a", 0.1),  # well-formed, ground truth not a number
    ("18", "18", 0.0),  # right number, wrong format
    ("Final: 18.", "18", 0.0),  # malformed
]


@pytest.mark.parametrize("completion, gt, expected", REWARD_CASES)
def test_gsm8k_reward(completion, gt, expected):
    assert gsm8k_reward(["prompt"], [completion], answer_final=[gt]) == [expected]


def test_reward_accepts_chat_messages_and_missing_column():
    chat = [[{"role": "assistant", "content": "2 + 2 = 4\nFinal: 4"}]]
    assert gsm8k_reward([[{"role": "user", "content": "2+2?"}]], chat, answer_final=["4"]) == [1.0]
    assert gsm8k_reward(["p", "p"], ["Final: 4", "4"]) == [0.1, 0.0]  # no ground truth column


def test_ground_truth_of_every_real_gsm8k_answer(gsm8k_dir):
    for split, rows in (("train", 7473), ("test", 1319)):
        lines = (gsm8k_dir / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == rows
        for line in lines:
            gt = extract_gsm8k_gt(json.loads(line)["answer"])
            assert gt is not None and re.fullmatch(r"-?\d+(\.\d+)?", gt), gt
            assert gsm8k_reward(["p"], [f"Final: {gt}"], answer_final=[gt]) == [1.0]


def test_reward_agrees_with_the_dataset_authors_grading(gsm8k_dir):
    # Their model solutions end in "A: <number>"; rewritten to "Final: <number>", our reward is
    # 1.0 exactly where the GSM8K authors graded the solution correct.
    checked = 0
    for line in (gsm8k_dir / "example_model_solutions.jsonl").read_text().splitlines():
        row = json.loads(line)
        gt = row["ground_truth"].rsplit("A:", 1)[1].strip()
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            solution = row[key]["solution"].strip()
            match = re.search(r"A:\s*(.*)$", solution)
            if match:
                completion = solution[: match.start()] + "Final: " + match.group(1).strip()
                assert (gsm8k_reward(["p"], [completion], answer_final=[gt]) == [1.0]) == row[key]["is_correct"]
                checked += 1
    assert checked > 5000


OTHER_CASES = [
    # (completion, ground truth, lenient, format-only)
    ("Final: 18", "18", 1.0, 1.0),  # right and well-formed: both full
    ("so the answer is 18.", "18", 1.0, 0.0),  # lenient takes the last number anywhere
    ("3 + 15 = 18, not 17", "18", 0.1, 0.0),  # ... the last one, which is wrong here
    ("no idea", "18", 0.0, 0.0),  # no number at all
    ("Final: 17", "18", 0.1, 1.0),  # format-only ignores the number
]


@pytest.mark.parametrize("completion, gt, lenient, fmt", OTHER_CASES)
def test_lenient_and_format_rewards(completion, gt, lenient, fmt):
    assert gsm8k_lenient_reward(["p"], [completion], answer_final=[gt]) == [lenient]
    assert format_reward(["p"], [completion]) == [fmt]


def test_length_penalty_counts_tokens():
    assert length_penalty(["p", "p"], ["a", "b"], completion_ids=[[1] * 250, [1] * 1000]) == [-0.25, -1.0]
    assert length_penalty(["p"], ["x" * 400]) == [-0.1]  # characters / 4 without token ids


def test_custom_reward_by_dotted_path():
    assert resolve_reward("core.rewards:format_reward") is format_reward
    assert resolve_reward("gsm8k") is gsm8k_reward
    with pytest.raises(ValueError, match="there is no module 'no_such_module'"):
        resolve_reward("no_such_module:f")
    with pytest.raises(ValueError, match="could not be imported"):
        resolve_reward("core.rewards:no_such_function")


def test_a_reward_file_under_the_home_folder_may_be_named_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.py").write_text("def f(completions, **kw):\n    return [1.0] * len(completions)\n")
    check_reward("~/mine.py:f")  # a shell expands no ~ inside a --set value
    assert resolve_reward("~/mine.py:f")(completions=["a", "b"]) == [1.0, 1.0]


def test_a_config_naming_a_reward_imports_nothing(capsys):
    # `this` prints the Zen of Python when imported: a config that names it must not run it
    from core.config import load_config

    assert load_config(sets=["rewards=[{name: 'this:s'}]"]).rewards == [{"name": "this:s", "weight": 1.0}]
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
