"""GSM8K-format data: the Hub (`openai/gsm8k`), a local jsonl/parquet file or folder, or a
built-in synthetic generator of word problems (offline, deterministic by seed).

Every source yields rows `{question, answer}` where `answer` ends in `#### <number>`;
`to_dataset` turns them into the columns the trainer uses: prompt, question, answer_final,
prompt_id.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from core.config import DatasetConfig
from core.errors import ConfigError
from core.prompts import build_prompt, prompt_id
from core.rewards import extract_gsm8k_gt

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"

NAMES = ["Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Liam"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards"]


def _add(a, b):
    return f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}"


def _sub(a, b):
    return f"{a} - {b} = <<{a}-{b}={a - b}>>{a - b}"


def _mul(a, b):
    return f"{a} * {b} = <<{a}*{b}={a * b}>>{a * b}"


def _div(a, b):
    return f"{a} / {b} = <<{a}/{b}={a // b}>>{a // b}"


def _one_step(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    """Level 1: add two single digits. Level 2: one addition or subtraction with numbers to 99."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
    else:
        a, b = rng.randint(10, 99), rng.randint(1, 99)
    if level == 1 or rng.random() < 0.5:
        return (
            f"{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?",
            [f"{name} has {_add(a, b)} {item}."],
            a + b,
        )
    a, b = max(a, b), min(a, b)
    return (
        f"{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?",
        [f"{name} has {_sub(a, b)} {item} left."],
        a - b,
    )


def _problem(rng: random.Random, level: int = 3) -> tuple[str, list[str], int]:
    """One word problem at a difficulty level: (question, solution lines, answer)."""
    if level < 3:
        return _one_step(rng, level)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(8)
    if kind == 0:
        a, b = rng.randint(5, 60), rng.randint(2, 40)
        c = rng.randint(1, a + b - 1)
        return (
            f"{name} has {a} {item}. {name} gets {b} more and then gives {c} to a friend. "
            f"How many {item} does {name} have now?",
            [
                f"After getting more, {name} has {_add(a, b)} {item}.",
                f"After giving some away, {name} has {_sub(a + b, c)} {item}.",
            ],
            a + b - c,
        )
    if kind == 1:
        a, b = rng.randint(2, 12), rng.randint(3, 15)
        c = rng.randint(1, a * b - 1)
        return (
            f"{name} buys {a} packs of {item} with {b} {item} in each pack and uses {c} of them. "
            f"How many {item} are left?",
            [f"{name} buys {_mul(a, b)} {item}.", f"{_sub(a * b, c)} {item} are left."],
            a * b - c,
        )
    if kind == 2:
        price, count = rng.randint(2, 9), rng.randint(2, 9)
        bill = rng.choice([b for b in (20, 50, 100) if b > price * count])
        return (
            f"A shop sells {item} for ${price} each. {name} buys {count} of them and pays with a "
            f"${bill} bill. How much change does {name} get, in dollars?",
            [f"The {item} cost {_mul(count, price)} dollars.", f"The change is {_sub(bill, price * count)} dollars."],
            bill - price * count,
        )
    if kind == 3:
        a, d, b = rng.randint(5, 40), rng.randint(2, 9), rng.randint(1, 30)
        return (
            f"{name} reads {a} pages a day for {d} days, then reads {b} pages on the next day. "
            f"How many pages does {name} read in total?",
            [f"In {d} days {name} reads {_mul(a, d)} pages.", f"In total {name} reads {_add(a * d, b)} pages."],
            a * d + b,
        )
    if kind == 4:
        a = 2 * rng.randint(10, 100)
        b = rng.randint(1, a // 2 - 1)
        return (
            f"{name} has ${a}. {name} spends half of it on a jacket and then ${b} on lunch. "
            f"How many dollars does {name} have left?",
            [
                f"After the jacket {name} has {_div(a, 2)} dollars.",
                f"After lunch {name} has {_sub(a // 2, b)} dollars.",
            ],
            a // 2 - b,
        )
    if kind == 5:
        rows, per = rng.randint(3, 20), rng.randint(4, 25)
        c = rng.randint(1, rows * per - 1)
        return (
            f"A hall has {rows} rows of {per} chairs. {c} chairs are taken away for another room. "
            f"How many chairs are left in the hall?",
            [f"The hall had {_mul(rows, per)} chairs.", f"{_sub(rows * per, c)} chairs are left."],
            rows * per - c,
        )
    if kind == 6:
        wage, hours, days = rng.randint(8, 30), rng.randint(2, 8), rng.randint(2, 6)
        return (
            f"{name} earns ${wage} an hour and works {hours} hours a day for {days} days. "
            f"How many dollars does {name} earn?",
            [
                f"Each day {name} earns {_mul(wage, hours)} dollars.",
                f"Over {days} days {name} earns {_mul(wage * hours, days)} dollars.",
            ],
            wage * hours * days,
        )
    friends, each, extra = rng.randint(2, 8), rng.randint(2, 12), rng.randint(1, 9)
    total = friends * each
    return (
        f"{friends} friends share {total} {item} equally. Then {name} gives each of them {extra} more. "
        f"How many {item} does each friend have?",
        [f"Each friend first gets {_div(total, friends)} {item}.", f"Then each has {_add(each, extra)} {item}."],
        each + extra,
    )


LEVELS = {
    1: "one addition of two single digits",
    2: "one addition or subtraction, numbers up to 99",
    3: "two steps mixing +, -, * and / (GSM8K-like)",
}


def synthetic_rows(n: int, seed: int, exclude: set[str] = frozenset(), level: int = 3) -> list[dict]:
    """n GSM8K-format problems at `level` (see LEVELS), the same for the same seed; questions in
    `exclude` are skipped. Level 1 has only 7,776 distinct questions; asking for more is an error."""
    rng, rows, seen = random.Random(seed), [], set(exclude)
    for _ in range(100 * n + 100_000):
        if len(rows) == n:
            return rows
        question, steps, answer = _problem(rng, level)
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": "\n".join(steps) + f"\n#### {answer}"})
    raise ConfigError(
        f"synthetic level {level} ran out of distinct questions after {len(rows)}: "
        "lower dataset.n_train / dataset.n_eval or choose a higher dataset.level"
    )


def _read_file(path: Path) -> list[dict]:
    """A GSM8K-format file's rows; ConfigError naming the file (and line) when it cannot serve:
    not a regular file, empty, a line that is not a JSON object, a row without a question and an
    answer, or answers without the `#### <number>` the reward needs."""
    if not path.is_file():
        raise ConfigError(
            f"dataset file '{path}' is not a regular file (a pipe or a device never ends): "
            "point dataset.path at a .jsonl or .parquet file"
        )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's many error types: one line
            raise ConfigError(f"dataset file '{path}' is not a readable parquet file ({e})") from None
        where = [f"row {i + 1}" for i in range(len(rows))]
    else:
        rows, where = [], []
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict):
                    raise ConfigError(
                        f"dataset file '{path}' line {number} is not a JSON object: each line must be "
                        '{"question": ..., "answer": "... #### <number>"}'
                    )
                rows.append(row)
                where.append(f"line {number}")
    if not rows:
        raise ConfigError(
            f"dataset file '{path}' holds no rows: give it GSM8K-format lines "
            '{"question": ..., "answer": "... #### <number>"}'
        )
    for row, at in zip(rows, where):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise ConfigError(
                f"dataset file '{path}' {at} has no text 'question' and 'answer' (it has "
                f"{', '.join(sorted(map(str, row))) or 'nothing'}): each row needs both"
            )
    missing = sum(extract_gsm8k_gt(row["answer"]) in (None, "") for row in rows)
    if missing:
        raise ConfigError(
            f"dataset file '{path}' has {missing} of {len(rows)} answers without '#### <number>': "
            "the reward compares with that number, so those questions could never score above 0.1"
        )
    return rows


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".jsonl", ".json", ".parquet"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise ConfigError(
        f"dataset folder '{folder}' has no {split}.jsonl or {split}.parquet: "
        "add that file or set dataset.split / dataset.eval_split"
    )


def _hub_rows(split: str) -> list[dict]:
    import datasets

    try:
        return list(datasets.load_dataset(HUB_ID, HUB_CONFIG, split=split))
    except Exception as e:  # offline, unknown split, ... : one actionable line
        raise ConfigError(
            f"could not load {HUB_ID} split '{split}' from the Hugging Face Hub ({type(e).__name__}): "
            "set dataset.path to a local GSM8K jsonl/parquet file or folder, or dataset.name: synthetic "
            "(offline preset: configs/tiny_cpu.yaml)"
        ) from None


def load_rows(ds: DatasetConfig, seed: int, evaluates: bool = True) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows) as {question, answer}, cut to n_train / n_eval; ConfigError where a run that
    `evaluates` would have no question to evaluate on."""
    if ds.name == "synthetic":
        train = synthetic_rows(ds.n_train, seed, level=ds.level)
        return train, synthetic_rows(ds.n_eval, seed + 1, exclude={r["question"] for r in train}, level=ds.level)
    if ds.path is None:
        return _hub_rows(ds.split)[: ds.n_train], _hub_rows(ds.eval_split)[: ds.n_eval]
    path = Path(ds.path)
    if path.is_dir():
        train_file = _split_file(path, ds.split)
        return (
            _enough(_read_file(train_file), ds.n_train, train_file)[: ds.n_train],
            _read_file(_split_file(path, ds.eval_split))[: ds.n_eval],
        )
    rows = _enough(_read_file(path), ds.n_train, path)  # one file: train on the first rows, evaluate on the ones after
    if evaluates and len(rows) == ds.n_train:
        raise ConfigError(
            f"dataset file '{path}' has {len(rows)} rows, all of them for training (dataset.n_train={ds.n_train}), "
            "and none left to evaluate on: give it more rows, lower dataset.n_train, or set eval.enabled=false"
        )
    return rows[: ds.n_train], rows[ds.n_train : ds.n_train + ds.n_eval]


def _enough(rows: list[dict], n_train: int, path: Path) -> list[dict]:
    if len(rows) < n_train:
        raise ConfigError(
            f"dataset file '{path}' has {len(rows)} rows, fewer than dataset.n_train={n_train}: "
            "lower dataset.n_train or give it more rows"
        )
    return rows


def to_dataset(rows: list[dict], tokenizer):
    """A `datasets.Dataset` with the columns the trainer and evaluator read."""
    import datasets

    records = []
    for row in rows:
        prompt = build_prompt(tokenizer, row["question"])
        records.append(
            {
                "prompt": prompt,
                "question": row["question"],
                "answer_final": extract_gsm8k_gt(row["answer"]),
                "prompt_id": prompt_id(prompt),
            }
        )
    return datasets.Dataset.from_list(records)
