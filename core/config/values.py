"""Values as a config key takes them: typed from its field (YAML, environment and --set text parsed
only where the type says so), a dotted key set or read, a form's text for a key, a value written
back as --set text. Every value that does not fit is a one-line ConfigError naming the key."""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import types
import typing
from typing import Any

import yaml

from core.config.schema import SECTIONS, RunConfig, field_types, fields_of
from core.config.trl_args import GRPO_CHOICES, GRPO_FROM_CONFIG, grpo_default, grpo_field_types
from core.errors import ConfigError
from core.rewards import check_reward


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


def choices(key: str) -> list | None:
    """The values dotted `key` may take when they are a fixed set (TRL's choices, an enum's
    values), else None."""
    section, _, name = key.rpartition(".")
    if section == "grpo" and name in GRPO_CHOICES:
        return GRPO_CHOICES[name]
    tp = field_type(key)
    for arg in typing.get_args(tp) or (tp,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [e.value for e in arg]
    return None


def field_type(key: str):
    """The declared type of dotted `key` (a grpo field's from GRPOConfig), or None for no such field."""
    section, _, name = key.rpartition(".")
    if section == "grpo":
        return grpo_field_types().get(name)
    cls = RunConfig if not section else SECTIONS.get(section)
    return field_types(cls).get(name) if cls else None


def unknown_key(key: str, valid) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    hint = (
        f"did you mean '{key[: len(key) - len(name)]}{close[0]}'?"
        if close
        else f"valid keys here: {', '.join(sorted(valid))}"
    )
    return ConfigError(f"unknown config key '{key}': {hint}")


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_KIND_WORDS = {
    bool: "true/false",
    int: "a whole number",
    float: "a number",
    str: "text",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}


def coerce(key: str, value: Any, tp) -> Any:
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
        if int in kinds and re.fullmatch(r"[+-]?\d+(_\d+)*", text):  # 1_000 as Python and float() read it
            return int(text)
        if float in kinds:
            try:
                return float(text)
            except ValueError:
                pass
    wanted = " or ".join(_KIND_WORDS[k] for k in _KIND_WORDS if k in kinds)
    raise ConfigError(f"config key '{key}' has value {value!r}, expected {wanted}")


def read_setting(config: dict, key: str, tp, default: Any = None) -> Any:
    """A run.yaml's value at dotted `key` (`config`: the file as read) as field type `tp`, coerced as the
    config coerces it (YAML reads `1e-5` as text); `default` where it is absent or does not fit, or is not
    finite: a run.yaml edited by hand may hold anything, and its readers (the doctor, the replay) go on."""
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    try:
        value = default if value is None else coerce(key, value, tp)
    except ConfigError:
        return default
    return default if isinstance(value, float) and not math.isfinite(value) else value


def parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# A number as people write one: YAML 1.1 also reads 010 as 8 (octal), 1:30 as 90 (base 60) and 0x1F as 31
# (its .inf and .nan stay YAML's: the range check says they are not finite).
PLAIN_NUMBER = re.compile(r"[+-]?((0|[1-9](_?\d)*)(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def text_value(key: str, text: str) -> Any:
    """The value of `--set key=text`: read as YAML (numbers, true, null, [lists], 'quoted text'),
    except that a key that takes text gets unquoted text exactly as given whenever YAML would make it
    anything but a value of the key's type: a path keeps its ` #` and `: `; and a number written other
    than as people write one is read as its environment variable would be (coerce), not as YAML 1.1's."""
    parsed = parse_scalar(text)
    kinds = value_kinds(field_type(key)) if field_type(key) is not None else set()
    if type(parsed) in (int, float) and math.isfinite(parsed) and not PLAIN_NUMBER.fullmatch(text.strip()):
        return text.strip()
    quoted = isinstance(parsed, str) and text.strip()[:1] in ("'", '"')  # YAML quotes: the text inside them
    if str in kinds and not quoted and (isinstance(parsed, str) or type(parsed) not in kinds):
        return text
    return parsed


# Paths in which `~` is the home folder, as a shell would have it: a shell expands no `~` after `key=`.
HOME_PATHS = ("model_name", "train.output_dir", "dataset.path", "launch.accelerate_config")


def apply_setting(cfg: RunConfig, key: str, value: Any) -> None:
    """Set dotted `key` on cfg, validating the key and coercing the value."""
    parts = key.split(".")
    if key in SECTIONS or key == "grpo":
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of keys, got {value!r}")
        apply_settings(cfg, [(f"{key}.{sub}", v) for sub, v in value.items()])
        return
    if parts[0] == "grpo":
        if len(parts) != 2:
            raise ConfigError(f"config key '{key}' must be grpo.<GRPOConfig field>, e.g. grpo.beta=0.04")
        name, types_ = parts[1], grpo_field_types()
        if name in GRPO_FROM_CONFIG:
            raise ConfigError(f"config key '{key}' is set from '{GRPO_FROM_CONFIG[name][0]}': set that key instead")
        if name not in types_:
            raise unknown_key(key, types_)
        value = coerce(key, value, types_[name])
        allowed = choices(key)
        if allowed is not None and value is not None and value not in allowed:
            raise ConfigError(f"config key '{key}' has value {value!r}, expected one of {', '.join(map(str, allowed))}")
        cfg.grpo[name] = value
        return
    if key == "rewards":
        cfg.rewards = reward_specs(value)
        return
    if len(parts) == 1:
        target, cls = cfg, RunConfig
    elif len(parts) == 2 and parts[0] in SECTIONS:
        target, cls = getattr(cfg, parts[0]), SECTIONS[parts[0]]
    elif parts[0] in SECTIONS:
        raise ConfigError(
            f"unknown config key '{key}': a section's keys are one level deep, such as {parts[0]}.{parts[1]}"
        )
    else:  # no such section: the key at the top level, or the section nearest in spelling, or the list
        sections, rest = [*SECTIONS, "grpo"], ".".join(parts[1:])
        close = difflib.get_close_matches(parts[0], sections, n=1, cutoff=0.6)
        hint = (
            f"did you mean '{rest}' (a top-level key)?"
            if rest in fields_of(RunConfig)
            else f"did you mean '{close[0]}.{rest}'?"
            if close
            else f"sections: {', '.join(sections)}"
        )
        raise ConfigError(f"unknown config key '{key}': {hint}")
    name, types_ = parts[-1], field_types(cls)
    if name not in types_:
        raise unknown_key(key, types_)
    value = coerce(key, value, types_[name])
    if key in HOME_PATHS and isinstance(value, str) and value.startswith("~"):
        value = os.path.expanduser(value)
    setattr(target, name, value)


def apply_settings(cfg: RunConfig, settings: list[tuple]) -> None:
    """apply_setting for each (key, value) or (key, value, the environment variable that set it); one
    ConfigError naming every key that is wrong, not the first."""
    problems = []
    for key, value, *variable in settings:
        try:
            apply_setting(cfg, key, value)
        except ConfigError as e:
            problems.append(f"{e} (from the environment variable {variable[0]})" if variable else str(e))
    if problems:
        raise ConfigError("; ".join(problems))


def reward_specs(value: Any) -> list[dict]:
    """`rewards:` as [{name, weight}], each name resolvable (built in, or importable)."""
    example = "e.g. rewards: [{name: gsm8k, weight: 1.0}, {name: format, weight: 0.2}]"
    if not isinstance(value, list) or not value:
        raise ConfigError(f"config key 'rewards' has value {value!r}, expected a non-empty list: {example}")
    specs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"name", "weight"} or "name" not in item:
            raise ConfigError(f"config key 'rewards[{i}]' has value {item!r}, expected {{name, weight}}: {example}")
        weight = coerce(f"rewards[{i}].weight", item.get("weight", 1.0), float)
        try:
            check_reward(str(item["name"]))
        except ValueError as e:
            raise ConfigError(f"config key 'rewards[{i}].name': {e}") from None
        specs.append({"name": str(item["name"]), "weight": weight})
    if len({s["name"] for s in specs}) < len(specs):
        raise ConfigError("config key 'rewards' names a reward twice: give each one once, with its weight")
    return specs


def get_value(cfg: RunConfig, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# Settings as a form edits them: one dotted key at a time.


def setting(cfg: RunConfig, key: str) -> Any:
    """The value in effect for dotted `key` (a `grpo.` field not set in cfg has GRPOConfig's default)."""
    section, _, name = key.rpartition(".")
    if section == "grpo":
        return cfg.grpo[name] if name in cfg.grpo else grpo_default(name)
    return get_value(cfg, key)


def parse_setting(key: str, text: str) -> Any:
    """A form's text for dotted `key` as the key's type (empty text is null); ConfigError if it does
    not fit."""
    return coerce(key, None if text.strip() == "" else text_value(key, text), field_type(key))


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
