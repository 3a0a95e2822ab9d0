"""Typed run configuration: YAML file < environment < `--set key=value`, validated up front.

Four parts: schema.py (the dataclasses, ENV_KEYS), values.py (typing and parsing a key's value),
checks.py (validate: values wrong together), trl_args.py (the mapping onto TRL's GRPOConfig). This
file reads a config: load_config.

    from core.config import load_config
    cfg = load_config("configs/tiny_cpu.yaml", sets=["train.num_train_steps=5"])   # no environment layer
    cfg = load_config(path, sets, env=os.environ)                                  # the CLI's precedence

The seed's YAML shape loads unchanged (top-level `n_train`/`n_eval`, `dataset: gsm8k` as a
string). Every bad value raises `ConfigError` with one sentence naming the key, the value and
what would be valid; nothing here loads a model or a dataset.
"""

from __future__ import annotations

import os
import time
import typing
from pathlib import Path

import yaml

from core import REPO
from core.config.checks import NOT_FROM_A_WEB_FORM, problems, shards_weights, validate, web_form_problem
from core.config.schema import (
    ENV_KEYS,
    LORA_BIASES,
    SECTIONS,
    DatasetConfig,
    EvalConfig,
    LaunchConfig,
    PeftConfig,
    RunConfig,
    RuntimeConfig,
    TrainConfig,
    field_types,
)
from core.config.trl_args import (
    FORM_TRACKERS,
    GRPO_CHOICES,
    GRPO_FROM_CONFIG,
    TRACKERS,
    grpo_default,
    grpo_field_types,
    installed_trackers,
    trackers,
    updates_per_batch,
)
from core.config.values import (
    apply_settings,
    changed_settings,
    choices,
    format_value,
    parse_setting,
    read_setting,
    setting,
    text_value,
    value_kinds,
)
from core.errors import ConfigError


def normalize_seed_shape(raw: dict) -> dict:
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


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file '{path}' does not exist: pass a YAML file such as configs/tiny_cpu.yaml")
    if not p.is_file():
        raise ConfigError(f"config file '{path}' is not a regular file: pass a YAML file such as configs/tiny_cpu.yaml")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:  # no permission to read it
        raise ConfigError(f"config file '{path}' cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str):  # YAML reads `1:`, `yes:`, `on:` and `null:` as a number, a boolean or null
            raise ConfigError(
                f"config file '{path}' has a key {key!r} that is not a name (YAML reads 1, yes, on and null as a "
                "number, a boolean or null): write config keys as names"
            )
    return raw


def default_runs_dir() -> Path:
    """Where runs live unless a run says otherwise: RUNS_DIR, else the repository's runs/ folder.
    The CLI writes there and the dashboard lists it, so a run started either way shows up in both."""
    return Path(os.environ.get("RUNS_DIR") or REPO / "runs")


def load_config(
    path: str | os.PathLike | None = None,
    sets: list[str] | tuple = (),
    env: typing.Mapping[str, str] | None = None,
    check: bool = True,
) -> RunConfig:
    """Build a RunConfig: defaults < YAML file < environment (only when `env` is given: the CLI
    passes os.environ) < `--set key=value` items; validated unless `check` is False (then problems()
    lists what is wrong)."""
    cfg = RunConfig()
    settings = list(normalize_seed_shape(read_yaml(path)).items()) if path is not None else []
    variables = {key: var for var, key in ENV_KEYS.items() if env and env.get(var, "") != ""}  # key -> its variable
    settings += [(key, env[var], var) for key, var in variables.items()]
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}' must look like key=value, e.g. --set train.num_train_steps=10")
        settings.append((key.strip(), text_value(key.strip(), value)))
        variables.pop(key.strip(), None)  # set again after the environment: no longer the variable's
    apply_settings(cfg, settings)  # every wrong key named at once, in one line
    if check:
        validate(cfg, variables)
    if cfg.train.output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.train.output_dir = str(default_runs_dir() / f"{cfg.run_name}_{stamp}")
    return cfg


__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ENV_KEYS",
    "EvalConfig",
    "FORM_TRACKERS",
    "GRPO_CHOICES",
    "GRPO_FROM_CONFIG",
    "LORA_BIASES",
    "LaunchConfig",
    "NOT_FROM_A_WEB_FORM",
    "PeftConfig",
    "RunConfig",
    "RuntimeConfig",
    "SECTIONS",
    "TRACKERS",
    "TrainConfig",
    "changed_settings",
    "choices",
    "default_runs_dir",
    "field_types",
    "format_value",
    "grpo_default",
    "grpo_field_types",
    "installed_trackers",
    "load_config",
    "parse_setting",
    "problems",
    "read_setting",
    "setting",
    "shards_weights",
    "trackers",
    "updates_per_batch",
    "validate",
    "value_kinds",
    "web_form_problem",
]
