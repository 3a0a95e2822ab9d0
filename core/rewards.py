"""Rewards: the GSM8K reward (parse `Final: <number>` at the very end of a completion, compare
numerically) and a few others to combine with it (`rewards:` in the config).

Rules (docs/config.md, "Reward"): after removing commas and trailing whitespace the completion must
end with `Final:`, optional spaces and a number (`-?\\d+(\\.\\d+)?`). Reward 1.0 when that number equals
the ground truth, 0.1 when it is well-formed but wrong (or there is no ground truth), 0.0 when
malformed. The same parser serves training rewards and evaluation.

Any reward, built-in or a user's (`resolve_reward`), is called through `called`, which checks what it
returns: in a training run, the pre-flight and the replay alike.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from core.errors import ConfigError

FINAL_RE = re.compile(r"Final: *(-?\d+(?:\.\d+)?)$")
# A Final line written to its end: the number, then a newline (what `stop_at_final` ends a completion at).
FINAL_LINE_DONE_RE = re.compile(r"Final: *-?\d+(?:\.\d+)?[ \t]*\n\s*$")

CORRECT, WRONG, MALFORMED = 1.0, 0.1, 0.0


def extract_model_final(text: str) -> str | None:
    """The number a completion ends with after `Final:`, or None when the format is missed."""
    match = FINAL_RE.search(text.replace(",", "").rstrip())
    return match.group(1) if match else None


def ends_final_line(text: str) -> bool:
    """True once `text` ends with a complete Final line: anything after it would make it malformed."""
    return FINAL_LINE_DONE_RE.search(text.replace(",", "")) is not None


def extract_gsm8k_gt(answer: str) -> str | None:
    """The ground truth of a GSM8K answer: the text after `####`, commas removed, stripped."""
    if "####" not in answer:
        return None
    return answer.split("####")[-1].replace(",", "").strip()


def _number(text: str | None) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").strip()) if text is not None else None
    except InvalidOperation:
        return None


def numbers_equal(prediction: str | None, ground_truth: str | None) -> bool:
    """Exact numeric equality: `18` == `18.00`, `1,080` == `1080`, any number of digits."""
    a, b = _number(prediction), _number(ground_truth)
    return a is not None and b is not None and a == b


def score(completion: str, ground_truth: str | None) -> tuple[str | None, float]:
    """(parsed prediction, reward) for one completion."""
    prediction = extract_model_final(completion)
    if prediction is None:
        return None, MALFORMED
    return prediction, CORRECT if numbers_equal(prediction, ground_truth) else WRONG


def completion_text(completion) -> str:
    """TRL passes plain strings, or chat message lists for conversational data."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def gsm8k_reward(prompts, completions, answer_final=None, **kwargs) -> list[float]:
    """TRL reward function: `answer_final` is the dataset column of ground-truth numbers."""
    truths = answer_final if answer_final is not None else [None] * len(completions)
    return [score(completion_text(c), gt)[1] for c, gt in zip(completions, truths, strict=True)]


NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The lenient reading of an answer: the last number anywhere in the text (commas removed)."""
    numbers = NUMBER_RE.findall(text.replace(",", ""))
    return numbers[-1] if numbers else None


def gsm8k_lenient_reward(prompts, completions, answer_final=None, **kwargs) -> list[float]:
    """Like gsm8k_reward, but the answer is the last number anywhere in the completion:
    1.0 right, 0.1 wrong, 0.0 no number at all."""
    truths = answer_final if answer_final is not None else [None] * len(completions)
    rewards = []
    for completion, gt in zip(completions, truths, strict=True):
        number = last_number(completion_text(completion))
        rewards.append(MALFORMED if number is None else CORRECT if numbers_equal(number, gt) else WRONG)
    return rewards


def format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion ends in a well-formed `Final: <number>` line, whatever the number."""
    return [1.0 if extract_model_final(completion_text(c)) is not None else 0.0 for c in completions]


def length_penalty(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """Minus the completion's length in thousands of tokens (characters / 4 without token ids):
    with weight w, every 1,000 tokens cost w."""
    lengths = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c)) / 4 for c in completions]
    )
    return [-n / 1000 for n in lengths]


REWARDS = {
    "gsm8k": gsm8k_reward,
    "gsm8k_lenient": gsm8k_lenient_reward,
    "format": format_reward,
    "length_penalty": length_penalty,
}


def check_reward(name: str) -> None:
    """ValueError unless `name` is a built-in reward, `package.module:function` whose module can be
    found, or `path/to/file.py:function` whose file exists. Nothing is imported (a module may do
    anything when imported): resolve_reward does that, when the run starts."""
    if name in REWARDS:
        return
    import importlib.util

    module, sep, attr = name.rpartition(":")
    if not sep or not module or not attr.isidentifier():
        raise ValueError(
            f"unknown reward {name!r}: use one of {', '.join(REWARDS)}, package.module:function or "
            "path/to/file.py:function"
        )
    if module.endswith(".py"):
        if not Path(module).expanduser().is_file():  # ~ is the home folder, as a shell would have it
            raise ValueError(f"reward {name!r}: there is no file {module!r}")
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ValueError(f"reward {name!r}: there is no module {module!r} to import it from")


def resolve_reward(name: str):
    """A reward function by built-in name, by dotted path `package.module:function`, or from a file,
    `path/to/file.py:function`."""
    check_reward(name)
    if name in REWARDS:
        return REWARDS[name]
    import importlib.util

    module, _, attr = name.rpartition(":")
    try:
        if module.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module).stem, Path(module).expanduser())
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
        else:
            loaded = importlib.import_module(module)
        fn = getattr(loaded, attr)
    except (Exception, SystemExit) as e:  # whatever the module raises as it is imported (an exit too): one line
        raise ValueError(f"reward {name!r} could not be imported ({_failure(e, {})})") from None
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not a function")
    return fn


class RewardError(ConfigError):
    """A reward that cannot score: it raised (its exception is the cause), or returned something other
    than one number per completion."""


FLOAT32_MAX = 3.4028234663852886e38  # TRL keeps rewards as float32: a larger value would be inf there


def called(name: str, fn, kwargs: dict, where, batch: str) -> list[float | None]:
    """Reward `name`'s values, `fn(**kwargs)` as TRL calls it (the run, the pre-flight and the replay
    alike), checked as TRL needs them: one number per completion (a Python, NumPy or 0-d tensor number,
    finite and within float32's range), or None where the reward does not apply (NaN counts as None, as
    TRL takes it). RewardError, one line naming the reward and the first completion it fails on
    (`where(i)`: the i-th, in words; `batch`: the call's batch, in words)."""
    count = len(kwargs["completions"])
    try:
        result = fn(**kwargs)
    except (Exception, SystemExit) as e:  # sys.exit() in a reward ends no run without a word
        raise RewardError(
            f"reward {name!r} raised {_failure(e, kwargs)} on {_first_failing(fn, kwargs, where, batch)}"
        ) from e
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: no warning about it
        raise RewardError(f"reward {name!r} is async: give a plain function (def, not async def)")
    try:
        values = list(result)
    except TypeError:
        raise RewardError(
            f"reward {name!r} returned {result!r} ({type(result).__name__}) for the {count} completions of {batch}: "
            "a reward returns a list, one value per completion"
        ) from None
    if len(values) != count:
        raise RewardError(
            f"reward {name!r} returned {len(values)} values for {count} completions ({batch}): it must return "
            "one per completion"
        )
    checked = []
    for i, value in enumerate(values):
        number = None if value is None else _number_of(value)
        if value is not None and number is None:
            raise RewardError(
                f"reward {name!r} returned {value!r} ({_type_name(value)}) for {where(i)}: a reward is a number, "
                "or None where it does not apply"
            )
        if number is not None and not math.isnan(number) and not abs(number) <= FLOAT32_MAX:
            raise RewardError(
                f"reward {name!r} returned {value!r} for {where(i)}: a reward is a finite number within float32's "
                "range (TRL's rewards are float32), or None where it does not apply"
            )
        checked.append(None if number is None or math.isnan(number) else number)
    return checked


def _type_name(value) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _number_of(value) -> float | None:
    """`value` as a float where it is one number (int, float, bool, a NumPy scalar, a 0-d tensor), else None."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # a list, a tensor of several values
        return None


def _failure(e: BaseException, kwargs: dict) -> str:
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) and e.args[0] not in kwargs:
        return f"KeyError {e.args[0]!r} (this run has no column {e.args[0]!r})"
    if isinstance(e, SystemExit):
        return f"SystemExit (sys.exit({'' if e.code is None else repr(e.code)}))"
    return f"{type(e).__name__}: {e}"


def _first_failing(fn, kwargs: dict, where, batch: str) -> str:
    """Where `fn` fails: the first completion it raises on alone, else the whole batch."""
    for i in range(len(kwargs["completions"])):
        one = {
            k: (v[i : i + 1] if isinstance(v, Sequence) and not isinstance(v, str) else v) for k, v in kwargs.items()
        }
        try:
            fn(**one)
        except (Exception, SystemExit):
            return where(i)
    return f"the batch of {batch}"
