"""The Launch form's Advanced section: every GRPOConfig field a form can set, grouped, common first."""

from __future__ import annotations

import dataclasses

import streamlit as st

from core import HEAVY_IMPORTS
from core.config import GRPO_FROM_CONFIG, NOT_FROM_A_WEB_FORM, grpo_field_types, value_kinds

COMMON_GRPO = [
    "beta",
    "loss_type",
    "temperature",
    "top_p",
    "top_k",
    "scale_rewards",
    "num_iterations",
    "epsilon",
    "epsilon_high",
    "mask_truncated_completions",
    "repetition_penalty",
    "warmup_steps",
    "weight_decay",
]


@st.cache_resource
def grpo_options() -> dict[str, list[dataclasses.Field]]:
    """The GRPOConfig fields `grpo:` can set from a form: the common ones first, then TRL's other
    GRPO fields, vLLM's, and those GRPOConfig inherits from TrainingArguments."""
    with HEAVY_IMPORTS:
        from transformers import TrainingArguments
        from trl import GRPOConfig

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    types = grpo_field_types()
    groups = {"Common": [], "GRPO": [], "vLLM": [], "Trainer": []}
    order = {name: i for i, name in enumerate(COMMON_GRPO)}
    for f in sorted(dataclasses.fields(GRPOConfig), key=lambda f: (order.get(f.name, len(order)), f.name)):
        if (
            f.name in GRPO_FROM_CONFIG
            or f.name in NOT_FROM_A_WEB_FORM
            or f.name.startswith("_")
            or not value_kinds(types[f.name]) - {type(None)}
        ):
            continue
        group = (
            "Common"
            if f.name in COMMON_GRPO
            else "vLLM"
            if "vllm" in f.name
            else "Trainer"
            if f.name in inherited
            else "GRPO"
        )
        groups[group].append(f)
    return groups


def is_toggle(name: str, value) -> bool:
    """Whether field `name`, now `value`, is shown as a toggle (else as text)."""
    return isinstance(value, bool) and bool in value_kinds(grpo_field_types()[name])
