"""Typed run configuration: YAML file < environment < `--set key=value`, validated up front.

    from core.config import load_config
    cfg = load_config("configs/tiny_cpu.yaml", sets=["train.num_train_steps=5"])   # no environment layer
    cfg = load_config(path, sets, env=os.environ)                                  # the CLI's precedence

The seed's YAML shape loads unchanged (top-level `n_train`/`n_eval`, `dataset: gsm8k` as a
string). Every bad value raises `ConfigError` with one sentence naming the key, the value and
what would be valid; nothing here loads a model or a dataset.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import math
import os
import re
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import REPO
from core.builtin_models import BUILTIN_MODELS
from core.errors import ConfigError
from core.rewards import check_reward


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    output_dir: str | None = _f(None, "Run directory; default runs/<run name>_<time> under RUNS_DIR or ./runs.")
    num_train_steps: int = _f(50, "Optimizer steps (TRL's max_steps).")
    per_device_train_batch_size: int = _f(1, "Completions per device per micro-step.")
    gradient_accumulation_steps: int = _f(4, "Micro-steps per optimizer step.")
    learning_rate: float = _f(5e-6, "AdamW learning rate.")
    logging_steps: int = _f(1, "Write a metrics.jsonl line every N steps.")
    save_steps: int = _f(0, "Save a checkpoint every N steps; 0 saves only the final model.")
    eval_steps: int = _f(0, "Also evaluate every N steps during training (metrics.jsonl); 0 = before/after only.")
    seed: int = _f(42, "Seed for Python, NumPy, torch, data order and the synthetic data.")


@dataclass
class DatasetConfig:
    name: str = _f("gsm8k", "gsm8k (Hub openai/gsm8k, or dataset.path) or synthetic (built-in, offline).")
    path: str | None = _f(None, "Local GSM8K-format data: a .jsonl/.parquet file, or a folder of <split>.jsonl.")
    level: int = _f(3, "Synthetic difficulty: 1 = a+b with single digits, 2 = one step to 99, 3 = two steps.")
    split: str = _f("train", "Split used for training.")
    eval_split: str = _f("test", "Split used for evaluation.")
    n_train: int = _f(32, "Training questions (the first N of the split).")
    n_eval: int = _f(16, "Evaluation questions (the first N of the eval split).")


@dataclass
class EvalConfig:
    enabled: bool = _f(True, "Evaluate before and after training.")
    batch_size: int = _f(16, "Questions per generate() call.")
    max_new_tokens: int | None = _f(None, "Token budget per answer; default: the top-level max_new_tokens.")
    temperature: float = _f(0.0, "0 = greedy decoding; > 0 samples.")
    top_p: float = _f(1.0, "Nucleus sampling mass when temperature > 0.")
    backend: str = _f("hf", "hf (transformers generate, batched) or vllm (CUDA only; "
                            "pip install -r requirements-vllm.txt).")
    vllm_gpu_memory_utilization: float = _f(0.3, "With backend vllm: the share of GPU memory eval's vLLM may take "
                                                 "beside training.")


@dataclass
class RuntimeConfig:
    use_wandb: bool = _f(False, "Report to Weights & Biases (project WANDB_PROJECT, default simple_grpo).")
    mps_fallback: bool = _f(True, "On Apple MPS, fall back to the CPU for unsupported ops.")


@dataclass
class LaunchConfig:
    num_processes: int = _f(1, "Worker processes on each machine (one per GPU); more than 1 starts them with "
                               "torchrun.")
    accelerate_config: str | None = _f(None, "An accelerate config file (DeepSpeed, FSDP; e.g. "
                                             "configs/accelerate/fsdp.yaml): the workers start with accelerate launch.")
    num_machines: int = _f(1, "Machines the run spans, each with launch.num_processes workers; its run folder must "
                              "be on storage every machine sees.")
    machine_rank: int = _f(0, "This machine's place among them, 0 to num_machines - 1; machine 0 hosts the "
                              "rendezvous, holds the run folder's lock and writes the run's files.")
    main_process_ip: str | None = _f(None, "The address of machine 0, which every machine can reach (needed with "
                                           "several machines).")
    main_process_port: int = _f(29500, "The rendezvous port on machine 0 (several machines).")


@dataclass
class RunConfig:
    model_name: str = _f("Qwen/Qwen2.5-0.5B-Instruct", "Hub id, local model folder, a .gguf file, builtin:tiny or "
                         "builtin:smollm2-135m (offline).")
    max_new_tokens: int = _f(256, "Completion length limit during training (TRL's max_completion_length).")
    num_generations: int = _f(8, "K: completions sampled per prompt; GRPO compares them within the group.")
    stop_at_final: bool = _f(False, "End each completion at its Final line: once `Final: <number>` and a newline "
                             "are written, the next token is the end of the message, in sampling and in eval "
                             "(transformers generation).")
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    rewards: list = field(default_factory=lambda: [{"name": "gsm8k", "weight": 1.0}], metadata={
        "help": "Reward functions and weights: built-in names (gsm8k, gsm8k_lenient, format, length_penalty) "
                "or package.module:function; TRL adds them up with these weights."})
    grpo: dict = field(default_factory=dict, metadata={"help": "Any other GRPOConfig field, passed to TRL."})

    @property
    def run_name(self) -> str:
        short = re.split(r"[/:]", self.model_name.rstrip("/"))[-1]
        return f"grpo_{short}_K{self.num_generations}_steps{self.train.num_train_steps}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ENV_KEYS = {
    "MODEL_NAME": "model_name",
    "OUTPUT_DIR": "train.output_dir",
    "MAX_STEPS": "train.num_train_steps",
    "NUM_GENERATIONS": "num_generations",
    "MAX_NEW_TOKENS": "max_new_tokens",
    "BATCH_SIZE": "train.per_device_train_batch_size",
    "GRAD_ACCUM": "train.gradient_accumulation_steps",
    "LR": "train.learning_rate",
    "N_TRAIN": "dataset.n_train",
    "N_EVAL": "dataset.n_eval",
    "SEED": "train.seed",
    # several machines: a SLURM script sets these from its own variables (scripts/slurm_train.sh)
    "NUM_MACHINES": "launch.num_machines",
    "MACHINE_RANK": "launch.machine_rank",
    "MAIN_PROCESS_IP": "launch.main_process_ip",
    "MAIN_PROCESS_PORT": "launch.main_process_port",
}

# GRPOConfig fields set from this config's own keys: field -> (the key it comes from, its value for
# TRL). `grpo:` may not set them again; core.train builds TRL's arguments from this same table.
GRPO_FROM_CONFIG = {
    "output_dir": ("train.output_dir", lambda c: str(c.train.output_dir)),
    "max_steps": ("train.num_train_steps", lambda c: c.train.num_train_steps),
    "per_device_train_batch_size": ("train.per_device_train_batch_size",
                                    lambda c: c.train.per_device_train_batch_size),
    "gradient_accumulation_steps": ("train.gradient_accumulation_steps",
                                    lambda c: c.train.gradient_accumulation_steps),
    "learning_rate": ("train.learning_rate", lambda c: c.train.learning_rate),
    "logging_steps": ("train.logging_steps", lambda c: c.train.logging_steps),
    "save_strategy": ("train.save_steps", lambda c: "steps" if c.train.save_steps > 0 else "no"),
    "save_steps": ("train.save_steps", lambda c: c.train.save_steps or 500),  # TRL wants > 0 even when off
    "seed": ("train.seed", lambda c: c.train.seed),
    "data_seed": ("train.seed", lambda c: c.train.seed),
    "num_generations": ("num_generations", lambda c: c.num_generations),
    "max_completion_length": ("max_new_tokens", lambda c: c.max_new_tokens),
    "report_to": ("runtime.use_wandb", lambda c: "wandb" if c.runtime.use_wandb else "none"),
    "log_completions": ("runtime.use_wandb", lambda c: c.runtime.use_wandb),  # TRL's completions table, in W&B
    "run_name": ("model_name", lambda c: os.environ.get("WANDB_NAME") or c.run_name),
    "reward_weights": ("rewards", lambda c: [r["weight"] for r in c.rewards]),
}

SECTIONS = {"train": TrainConfig, "dataset": DatasetConfig, "eval": EvalConfig, "runtime": RuntimeConfig,
            "launch": LaunchConfig}
POSITIVE = ["max_new_tokens", "train.num_train_steps", "train.per_device_train_batch_size",
            "train.gradient_accumulation_steps", "train.learning_rate", "train.logging_steps",
            "dataset.n_train", "dataset.n_eval", "eval.batch_size", "eval.max_new_tokens", "launch.num_processes",
            "launch.num_machines", "launch.main_process_port"]


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def field_types(cls) -> dict[str, Any]:
    """A dataclass's field types, resolved (`typing.get_type_hints`)."""
    return typing.get_type_hints(cls)


def grpo_field_types() -> dict[str, Any]:
    from trl import GRPOConfig  # heavy import, only when a `grpo:` key is checked

    return field_types(GRPOConfig)


def grpo_default(name: str) -> Any:
    """GRPOConfig's default for field `name` (an enum as its plain value)."""
    from trl import GRPOConfig

    f = _fields(GRPOConfig)[name]
    value = f.default_factory() if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING \
        else None if f.default is dataclasses.MISSING else f.default
    return value.value if isinstance(value, enum.Enum) else value


def value_kinds(tp) -> set[type]:
    """The plain types a field of type `tp` accepts from YAML or text: a subset of None, bool, int,
    float, str, dict and list (an enum of strings counts as str); empty when none of them fits."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kinds = set()
    for arg in args:
        origin = typing.get_origin(arg) or arg
        if origin is typing.Literal:
            kinds |= {type(v) for v in typing.get_args(arg)}
        elif origin is type(None) or origin is None:
            kinds.add(type(None))
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            kinds.add(str)
        elif origin in (bool, int, float, str, dict, list):
            kinds.add(origin)
    return kinds


# GRPOConfig text fields with a fixed set of values, as TRL's help text for each lists them (TRL
# checks none of them before training starts; a test checks each value still appears in that help).
GRPO_CHOICES = {
    "loss_type": ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"],
    "scale_rewards": ["group", "batch", "none"],
    "importance_sampling_level": ["token", "sequence"],
    "multi_objective_aggregation": ["sum_then_normalize", "normalize_then_sum"],
    "vllm_mode": ["server", "colocate"],
    "vllm_model_impl": ["transformers", "vllm"],
}


def choices(key: str) -> list | None:
    """The values dotted `key` may take when they are a fixed set (TRL's choices, an enum's
    values), else None."""
    section, _, name = key.rpartition(".")
    if section == "grpo" and name in GRPO_CHOICES:
        return GRPO_CHOICES[name]
    tp = _field_type(key)
    for arg in typing.get_args(tp) or (tp,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [e.value for e in arg]
    return None


def _field_type(key: str):
    """The declared type of dotted `key` (a grpo field's from GRPOConfig), or None for no such field."""
    section, _, name = key.rpartition(".")
    if section == "grpo":
        return grpo_field_types().get(name)
    cls = RunConfig if not section else SECTIONS.get(section)
    return field_types(cls).get(name) if cls else None


def _unknown(key: str, valid) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    hint = f"did you mean '{key[: len(key) - len(name)]}{close[0]}'?" if close else \
        f"valid keys here: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key '{key}': {hint}")


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_KIND_WORDS = {bool: "true/false", int: "a whole number", float: "a number", str: "text", dict: "a mapping",
               list: "a list", type(None): "null"}


def _coerce(key: str, value: Any, tp) -> Any:
    """Return `value` as field type `tp` accepts it. Strings from the environment, --set, or YAML's
    `5e-6` (which YAML reads as text) are parsed; anything else that does not fit raises ConfigError."""
    kinds = value_kinds(tp)
    if not kinds:
        return value  # a type we do not check (TRL's own validation sees it)
    if value is None:
        if type(None) in kinds:
            return None
    elif isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int) and (int in kinds or float in kinds):
        return value if int in kinds else float(value)
    elif isinstance(value, float) and float in kinds:
        return value
    elif isinstance(value, (dict, list)) and type(value) in kinds:
        return value
    if isinstance(value, str):
        if str in kinds:
            return value  # text stays text where text is allowed (YAML has already read `true`, `3`)
        text = value.strip()
        if bool in kinds and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if int in kinds and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if float in kinds:
            try:
                return float(text)
            except ValueError:
                pass
    wanted = " or ".join(_KIND_WORDS[k] for k in _KIND_WORDS if k in kinds)
    raise ConfigError(f"config key '{key}' has value {value!r}, expected {wanted}")


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _text_value(key: str, text: str) -> Any:
    """The value of `--set key=text`: read as YAML (numbers, true, null, [lists], 'quoted text'),
    except that a key that takes text gets unquoted text exactly as given whenever YAML would make it
    anything but a value of the key's type: a path keeps its ` #` and `: `."""
    parsed = _parse_scalar(text)
    kinds = value_kinds(_field_type(key)) if _field_type(key) is not None else set()
    quoted = isinstance(parsed, str) and text.strip()[:1] in ("'", '"')  # YAML quotes: the text inside them
    if str in kinds and not quoted and (isinstance(parsed, str) or type(parsed) not in kinds):
        return text
    return parsed


def _normalize_seed_shape(raw: dict) -> dict:
    """Map the seed's layout onto ours: `dataset: gsm8k` and top-level n_train/n_eval."""
    raw = dict(raw)
    if isinstance(raw.get("dataset"), str):
        raw["dataset"] = {"name": raw["dataset"]}
    for key in ("n_train", "n_eval"):
        if key in raw:
            raw.setdefault("dataset", {})
            if not isinstance(raw["dataset"], dict):
                break
            raw["dataset"] = {**raw["dataset"], key: raw.pop(key)}
    return raw


def _read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist: pass a YAML file such as configs/tiny_cpu.yaml")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def _apply(cfg: RunConfig, key: str, value: Any) -> None:
    """Set dotted `key` on cfg, validating the key and coercing the value."""
    parts = key.split(".")
    if key in SECTIONS or key == "grpo":
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of keys, got {value!r}")
        for sub, v in value.items():
            _apply(cfg, f"{key}.{sub}", v)
        return
    if parts[0] == "grpo":
        if len(parts) != 2:
            raise ConfigError(f"config key '{key}' must be grpo.<GRPOConfig field>, e.g. grpo.beta=0.04")
        name, types_ = parts[1], grpo_field_types()
        if name in GRPO_FROM_CONFIG:
            raise ConfigError(f"config key '{key}' is set from '{GRPO_FROM_CONFIG[name][0]}': set that key instead")
        if name not in types_:
            raise _unknown(key, types_)
        value = _coerce(key, value, types_[name])
        allowed = choices(key)
        if allowed is not None and value is not None and value not in allowed:
            raise ConfigError(f"config key '{key}' has value {value!r}, expected one of "
                              f"{', '.join(map(str, allowed))}")
        cfg.grpo[name] = value
        return
    if key == "rewards":
        cfg.rewards = _reward_specs(value)
        return
    if len(parts) == 1:
        target, cls = cfg, RunConfig
    elif len(parts) == 2 and parts[0] in SECTIONS:
        target, cls = getattr(cfg, parts[0]), SECTIONS[parts[0]]
    else:
        raise _unknown(key, list(_fields(RunConfig)))
    name, types_ = parts[-1], field_types(cls)
    if name not in types_:
        raise _unknown(key, types_)
    setattr(target, name, _coerce(key, value, types_[name]))


def _reward_specs(value: Any) -> list[dict]:
    """`rewards:` as [{name, weight}], each name resolvable (built in, or importable)."""
    example = "e.g. rewards: [{name: gsm8k, weight: 1.0}, {name: format, weight: 0.2}]"
    if not isinstance(value, list) or not value:
        raise ConfigError(f"config key 'rewards' has value {value!r}, expected a non-empty list: {example}")
    specs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"name", "weight"} or "name" not in item:
            raise ConfigError(f"config key 'rewards[{i}]' has value {item!r}, expected {{name, weight}}: {example}")
        weight = _coerce(f"rewards[{i}].weight", item.get("weight", 1.0), float)
        try:
            check_reward(str(item["name"]))
        except ValueError as e:
            raise ConfigError(f"config key 'rewards[{i}].name': {e}") from None
        specs.append({"name": str(item["name"]), "weight": weight})
    if len({s["name"] for s in specs}) < len(specs):
        raise ConfigError("config key 'rewards' names a reward twice: give each one once, with its weight")
    return specs


def _get(cfg: RunConfig, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: RunConfig) -> RunConfig:
    """Check values that are each well-typed but wrong, or wrong together."""
    for key in POSITIVE:
        value = _get(cfg, key)
        if value is not None and not value > 0:  # also NaN
            raise ConfigError(f"config key '{key}' has value {value!r}, expected a number greater than 0")
    numbers = [(f"{name}", getattr(cfg, name)) for name in ("max_new_tokens",)] + \
        [(f"{section}.{name}", value) for section in SECTIONS
         for name, value in vars(getattr(cfg, section)).items()] + \
        [(f"grpo.{name}", value) for name, value in cfg.grpo.items()]
    for key, value in numbers:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}' has value {value!r}, expected a finite number")
    if cfg.grpo.get("num_iterations", 1) < 1:
        raise ConfigError(f"config key 'grpo.num_iterations' has value {cfg.grpo['num_iterations']!r}, expected 1 "
                          "or more: the number of updates per generation batch")
    for key in ("train.save_steps", "train.eval_steps"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' has value {_get(cfg, key)!r}, expected 0 (off) or more")
    if cfg.num_generations < 2:
        raise ConfigError(f"config key 'num_generations' has value {cfg.num_generations}, expected at least 2: "
                          "GRPO scores each completion against the others sampled for the same prompt")
    batch = cfg.train.per_device_train_batch_size
    gen_batch = cfg.grpo.get("generation_batch_size") or batch * cfg.num_generations
    if gen_batch % cfg.num_generations:
        raise ConfigError(
            f"generation batch size {gen_batch} is not divisible by num_generations={cfg.num_generations}: TRL "
            "generates whole groups of K completions per prompt, so the generation batch (by default "
            "per_device_train_batch_size x num_generations) must be a multiple of K")
    launch = cfg.launch
    procs = launch.num_processes * launch.num_machines  # the world size
    if gen_batch % (batch * procs):
        raise ConfigError(
            f"generation batch size {gen_batch} is not divisible by per_device_train_batch_size x num_processes x "
            f"num_machines = {batch} x {launch.num_processes} x {launch.num_machines}: TRL splits each generation "
            f"batch into equal micro-batches on every process, so with the default generation batch (batch x K) "
            f"num_generations={cfg.num_generations} must be a multiple of the world size ({procs} processes)")
    if not 0 <= launch.machine_rank < launch.num_machines:
        raise ConfigError(f"config key 'launch.machine_rank' has value {launch.machine_rank}, expected 0 to "
                          f"{launch.num_machines - 1}: each of the launch.num_machines={launch.num_machines} machines "
                          "has its own rank, machine 0 first")
    if launch.num_machines > 1 and not launch.main_process_ip:
        raise ConfigError(f"launch.num_machines={launch.num_machines} needs launch.main_process_ip: the address of "
                          "machine 0, where every machine meets (e.g. the first host of SLURM_JOB_NODELIST)")
    if not 0 < launch.main_process_port < 65536:
        raise ConfigError(f"config key 'launch.main_process_port' has value {launch.main_process_port}, expected a "
                          "port number from 1 to 65535")
    if cfg.dataset.level not in (1, 2, 3):
        raise ConfigError(f"config key 'dataset.level' has value {cfg.dataset.level!r}, expected 1, 2 or 3")
    if cfg.dataset.name not in ("gsm8k", "synthetic"):
        raise ConfigError(f"config key 'dataset.name' has value {cfg.dataset.name!r}, expected gsm8k or synthetic")
    if cfg.dataset.path is not None:
        path = Path(cfg.dataset.path)
        if cfg.dataset.name == "synthetic":
            raise ConfigError(f"config key 'dataset.path' has value {cfg.dataset.path!r}, but dataset.name is "
                              "synthetic, which generates its own problems: set dataset.name: gsm8k to read the file, "
                              "or remove dataset.path")
        if not path.exists():
            raise ConfigError(f"config key 'dataset.path' has value {cfg.dataset.path!r}, but no such file or folder "
                              "exists: point it at a GSM8K-format .jsonl/.parquet file or a folder of them")
        if not (path.is_file() or path.is_dir()):
            raise ConfigError(f"config key 'dataset.path' has value {cfg.dataset.path!r}, which is not a regular "
                              "file or folder (a pipe or a device never ends): point it at a .jsonl/.parquet file")
    if not 0.0 < cfg.eval.top_p <= 1.0 or cfg.eval.temperature < 0:
        raise ConfigError(f"eval.temperature={cfg.eval.temperature} / eval.top_p={cfg.eval.top_p} are out of range: "
                          "temperature must be >= 0 (0 = greedy), top_p in (0, 1]")
    if cfg.stop_at_final and (cfg.grpo.get("use_vllm") or cfg.eval.backend == "vllm"):
        raise ConfigError("stop_at_final ends completions inside transformers' generate, not vLLM's: set "
                          "grpo.use_vllm=false and eval.backend=hf, or stop_at_final=false")
    if cfg.eval.backend not in ("hf", "vllm"):
        raise ConfigError(f"config key 'eval.backend' has value {cfg.eval.backend!r}, expected hf or vllm")
    if not 0.0 < cfg.eval.vllm_gpu_memory_utilization < 1.0:
        raise ConfigError(f"config key 'eval.vllm_gpu_memory_utilization' has value "
                          f"{cfg.eval.vllm_gpu_memory_utilization!r}, expected a fraction between 0 and 1")
    if cfg.launch.accelerate_config is not None:
        _check_accelerate_config(cfg)
    name = cfg.model_name
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if name.startswith("builtin:"):
        if name not in BUILTIN_MODELS:
            raise ConfigError(f"config key 'model_name' has value {name!r}, but there is no such built-in model: "
                              f"use one of {', '.join(BUILTIN_MODELS)}")
    elif name.endswith(".gguf"):
        if not Path(name).expanduser().is_file():
            raise ConfigError(f"config key 'model_name' has value {name!r}, but there is no such GGUF file: give "
                              "an existing .gguf file (it is converted once into a model folder)")
    elif (looks_like_path or Path(name).expanduser().exists()) and not Path(name).expanduser().is_dir():
        raise ConfigError(f"config key 'model_name' has value {name!r}, but that model folder does not exist: "
                          "give an existing local folder, a Hub id like Qwen/Qwen2.5-0.5B-Instruct, or builtin:tiny")
    return cfg


def _check_accelerate_config(cfg: RunConfig) -> None:
    """launch.accelerate_config must be a file `accelerate launch` accepts, able to start the
    workers on this machine, with settings the run can keep."""
    import importlib.util

    import torch
    from accelerate.commands.config.config_args import load_config_from_file

    path, num_processes = cfg.launch.accelerate_config, cfg.launch.num_processes
    key = f"config key 'launch.accelerate_config' ({path!r})"
    if not Path(path).is_file():
        raise ConfigError(f"{key} names no file: give an accelerate config such as configs/accelerate/fsdp.yaml")
    try:
        acc = load_config_from_file(path)
    except Exception as e:  # accelerate's own check: YAML errors, unknown keys, bad values
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key} is not a valid accelerate config: {problem}") from None
    if acc.use_cpu and num_processes > 1:
        raise ConfigError(f"{key} sets use_cpu: true, with which accelerate launch starts one process, not "
                          f"{num_processes}: set use_cpu: false (CPU workers then train together over gloo)")
    if cfg.train.eval_steps and cfg.eval.enabled and shards_weights(cfg):
        raise ConfigError(f"train.eval_steps={cfg.train.eval_steps} evaluates on rank 0 during training, but {path} "
                          "spreads the weights over the workers: set train.eval_steps=0 (the evals before and "
                          "after training still run)")
    engine = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(acc.distributed_type)
    if engine and not torch.cuda.is_available():
        raise ConfigError(f"{key} uses {engine}, which accelerate applies on CUDA GPUs only and this machine has "
                          "none: use configs/accelerate/ddp.yaml, or no accelerate config, to train on the CPU")
    if engine == "DeepSpeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{key} uses DeepSpeed, which is not installed: pip install deepspeed")


def shards_weights(cfg: RunConfig) -> bool:
    """True when the run's accelerate config spreads the weights over the workers (FSDP, DeepSpeed
    ZeRO-3): then no single rank holds the whole model during training."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not cfg.launch.accelerate_config:
        return False
    acc = load_config_from_file(cfg.launch.accelerate_config)
    return acc.distributed_type == "FSDP" or \
        (acc.distributed_type == "DEEPSPEED" and (acc.deepspeed_config or {}).get("zero_stage") == 3)


# GRPOConfig fields a web form may not set (core.runs.launch refuses them for the dashboard): they
# publish to the Hub or to a Trackio space, write outside the run folder, or name files to load.
NOT_FROM_A_WEB_FORM = ("push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy",
                       "hub_always_push", "hub_revision", "log_completions_hub_repo", "project", "trackio_space_id",
                       "trackio_bucket_id", "trackio_static_space_id", "logging_dir", "deepspeed", "fsdp_config",
                       "resume_from_checkpoint", "model_init_kwargs")


def web_form_problem(cfg: RunConfig) -> str | None:
    """Why the dashboard may not launch `cfg` (one line), or None: a web page is not a shell."""
    for name in NOT_FROM_A_WEB_FORM:
        if name in cfg.grpo and cfg.grpo[name] not in (None, False, "", grpo_default(name)):
            return (f"grpo.{name} cannot be set from the dashboard (it publishes, writes outside the run folder or "
                    "names files to load): run python -m core.train from a terminal for that")
    return None


def default_runs_dir() -> Path:
    """Where runs live unless a run says otherwise: RUNS_DIR, else the repository's runs/ folder.
    The CLI writes there and the dashboard lists it, so a run started either way shows up in both."""
    return Path(os.environ.get("RUNS_DIR") or REPO / "runs")


def load_config(path: str | os.PathLike | None = None, sets: list[str] | tuple = (),
                env: typing.Mapping[str, str] | None = None) -> RunConfig:
    """Build a RunConfig: defaults < YAML file < environment (only when `env` is given: the CLI
    passes os.environ) < `--set key=value` items."""
    cfg = RunConfig()
    if path is not None:
        for key, value in _normalize_seed_shape(_read_yaml(path)).items():
            _apply(cfg, key, value)
    for var, key in ENV_KEYS.items():
        if env and env.get(var, "") != "":
            _apply(cfg, key, env[var])
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}' must look like key=value, e.g. --set train.num_train_steps=10")
        _apply(cfg, key.strip(), _text_value(key.strip(), value))
    validate(cfg)
    if cfg.train.output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.train.output_dir = str(default_runs_dir() / f"{cfg.run_name}_{stamp}")
    return cfg


# ---- settings as a form edits them: one dotted key at a time -----------------------------------

def setting(cfg: RunConfig, key: str) -> Any:
    """The value in effect for dotted `key` (a `grpo.` field not set in cfg has GRPOConfig's default)."""
    section, _, name = key.rpartition(".")
    if section == "grpo":
        return cfg.grpo[name] if name in cfg.grpo else grpo_default(name)
    return _get(cfg, key)


def parse_setting(key: str, text: str) -> Any:
    """A form's text for dotted `key` as the key's type (empty text is null); ConfigError if it does
    not fit."""
    return _coerce(key, None if text.strip() == "" else _text_value(key, text), _field_type(key))


def format_value(value: Any) -> str:
    """A value as one line of YAML (what --set reads back to the same value); None as ''."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip().removesuffix("...").strip()


def changed_settings(base: RunConfig, wanted: dict[str, Any]) -> list[str]:
    """`key=value` items (for --set) for the values in `wanted` that differ from those in effect in `base`."""
    return [f"{key}={format_value(value) or 'null'}" for key, value in wanted.items() if value != setting(base, key)]
