"""The rollout recorder: every field, one file per rank, append-only, group sample indices."""

import typing
from types import SimpleNamespace

import numpy as np
import pytest

from core.rewards import RewardError, format_reward, gsm8k_reward, length_penalty
from core.rollouts import RolloutRecorder, logged_rewards
from core.rundir import ROLLOUT_FIELDS, TOKEN_FIELDS
from tests.conftest import lines


def logged_reward(fn, recorder, num_generations):
    (reward,) = logged_rewards([("gsm8k", fn, 1.0)], recorder, num_generations)
    return reward


def call(reward, step, completions, k=2):
    n = len(completions)
    return reward(
        prompts=["P0"] * k + ["P1"] * (n - k),
        completions=completions,
        completion_ids=[[1] * (i + 1) for i in range(n)],
        trainer_state=SimpleNamespace(global_step=step),
        prompt_id=["a"] * k + ["b"] * (n - k),
        question=["q0"] * k + ["q1"] * (n - k),
        answer_final=["4"] * k + ["5"] * (n - k),
        log_metric=print,
    )


def test_records_every_field_and_returns_the_rewards(tmp_path):
    reward = logged_reward(gsm8k_reward, RolloutRecorder(tmp_path), num_generations=2)
    assert reward.__name__ == "gsm8k"  # TRL names the reward metrics after the function
    out = call(reward, 3, ["Final: 4", "Final: 9", "nope", [{"role": "assistant", "content": "Final: 5"}]])
    assert out == [1.0, 0.1, 0.0, 1.0]
    records = lines(tmp_path / "rollouts" / "rollouts.jsonl")
    assert [list(r) for r in records] == [list(ROLLOUT_FIELDS)] * 4
    assert [r["step"] for r in records] == [4] * 4  # scored while global_step is 3: for the update of step 4
    assert [r["sample"] for r in records] == [0, 1, 0, 1]
    assert [r["prediction"] for r in records] == ["4", "9", None, "5"]
    assert [r["correct"] for r in records] == [True, False, False, True]
    assert [r["completion_tokens"] for r in records] == [1, 2, 3, 4]
    assert records[3]["completion"] == "Final: 5" and records[2]["prompt_id"] == "b"
    assert records[0]["ground_truth"] == "4" and records[0]["question"] == "q0" and records[0]["rank"] == 0
    for r in records:  # every value has its declared type
        assert all(
            isinstance(r[name], typing.get_origin(tp) or tp)
            for name, tp in ROLLOUT_FIELDS.items()
            if r[name] is not None
        ), r
    tokens = lines(tmp_path / "tokens" / "tokens.jsonl")  # the sampled ids, keyed as the rollouts are
    assert [list(t) for t in tokens] == [list(TOKEN_FIELDS)] * 4
    assert [(t["step"], t["prompt_id"], t["sample"], t["ids"]) for t in tokens] == [
        (4, "a", 0, [1]),
        (4, "a", 1, [1, 1]),
        (4, "b", 0, [1, 1, 1]),
        (4, "b", 1, [1, 1, 1, 1]),
    ]


def test_ranks_write_their_own_files_and_continue_the_group_numbering(tmp_path):
    # K=4 split over two ranks: rank 1 holds samples 2 and 3 of rank 0's group
    reward = logged_reward(gsm8k_reward, RolloutRecorder(tmp_path, rank=1), num_generations=4)
    call(reward, 0, ["Final: 4", "Final: 4"])
    records = lines(tmp_path / "rollouts" / "rollouts.rank1.jsonl")
    assert [(r["rank"], r["sample"]) for r in records] == [(1, 2), (1, 3)]
    assert not (tmp_path / "rollouts" / "rollouts.jsonl").exists()


def test_append_only(tmp_path):
    reward = logged_reward(gsm8k_reward, RolloutRecorder(tmp_path), num_generations=2)
    call(reward, 0, ["Final: 4", "x"])
    path = tmp_path / "rollouts" / "rollouts.jsonl"
    first = path.read_bytes()
    call(reward, 1, ["Final: 1", "Final: 4", "y", "z"])
    assert path.read_bytes().startswith(first)
    assert [r["step"] for r in lines(path)] == [1, 1, 2, 2, 2, 2]


def test_several_rewards_make_one_record_with_each_value_and_the_weighted_total(tmp_path):
    funcs = logged_rewards(
        [("gsm8k", gsm8k_reward, 1.0), ("format", format_reward, 0.5), ("length_penalty", length_penalty, 2.0)],
        RolloutRecorder(tmp_path),
        num_generations=2,
    )
    assert [f.__name__ for f in funcs] == ["gsm8k", "format", "length_penalty"]
    path = tmp_path / "rollouts" / "rollouts.jsonl"
    outputs = []
    for f in funcs:  # as TRL calls them: one after another on the same batch
        outputs.append(call(f, 4, ["Final: 4", "x"]))
        assert path.exists() == (f is funcs[-1])  # written once, by the last
    assert outputs == [[1.0, 0.0], [1.0, 0.0], [-0.001, -0.002]]
    records = lines(path)
    assert [r["rewards"] for r in records] == [
        {"gsm8k": 1.0, "format": 1.0, "length_penalty": -0.001},
        {"gsm8k": 0.0, "format": 0.0, "length_penalty": -0.002},
    ]
    assert [r["reward"] for r in records] == [1.0 + 0.5 - 0.002, -0.004]
    assert [r["correct"] for r in records] == [True, False]


def test_a_reward_may_return_numpy_numbers_or_none_and_a_bad_value_is_named_where_it_is(tmp_path):
    reward = logged_reward(
        lambda prompts, completions, **kw: np.array([1.0, np.nan, 0.5, 0]), RolloutRecorder(tmp_path), 2
    )
    assert call(reward, 0, ["a", "b", "c", "d"]) == [1.0, None, 0.5, 0.0]  # NaN: None, as TRL takes it
    records = lines(tmp_path / "rollouts" / "rollouts.jsonl")
    assert [r["rewards"]["gsm8k"] for r in records] == [1.0, None, 0.5, 0.0]
    assert [r["reward"] for r in records] == [1.0, None, 0.5, 0.0]  # scored by no function: no reward, as in TRL
    # K=4 over two ranks: rank 1's second completion is sample 3 of its prompt
    bad = logged_reward(lambda prompts, completions, **kw: [0.0, "high"], RolloutRecorder(tmp_path, rank=1), 4)
    with pytest.raises(RewardError, match=r"returned 'high' \(str\) for step 1, prompt a, sample 3: a reward is a"):
        call(bad, 0, ["x", "y"])
