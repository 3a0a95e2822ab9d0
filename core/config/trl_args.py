"""The config's mapping onto TRL's GRPOConfig: the fields set from this config's own keys, the types
and defaults of every other (the `grpo:` passthrough), and the values TRL's help text lists."""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any

from core import HEAVY_IMPORTS
from core.config.schema import field_types, fields_of

# GRPOConfig fields set from this config's own keys: field -> (the key it comes from, its value for
# TRL). `grpo:` may not set them again; core.train builds TRL's arguments from this same table.
GRPO_FROM_CONFIG = {
    "output_dir": ("train.output_dir", lambda c: str(c.train.output_dir)),
    "max_steps": ("train.num_train_steps", lambda c: c.train.num_train_steps),
    "per_device_train_batch_size": ("train.per_device_train_batch_size", lambda c: c.train.per_device_train_batch_size),
    "gradient_accumulation_steps": ("train.gradient_accumulation_steps", lambda c: c.train.gradient_accumulation_steps),
    "learning_rate": ("train.learning_rate", lambda c: c.train.learning_rate),
    "logging_steps": ("train.logging_steps", lambda c: c.train.logging_steps),
    "save_strategy": ("train.save_steps", lambda c: "steps" if c.train.save_steps > 0 else "no"),
    "save_steps": ("train.save_steps", lambda c: c.train.save_steps or 500),  # TRL wants > 0 even when off
    "seed": ("train.seed", lambda c: c.train.seed),
    "data_seed": ("train.seed", lambda c: c.train.seed),
    "num_generations": ("num_generations", lambda c: c.num_generations),
    "max_completion_length": ("max_new_tokens", lambda c: c.max_new_tokens),
    "report_to": ("runtime.report_to", lambda c: trackers(c) or "none"),
    # TRL's completions table, in W&B and Trackio (it also writes completions/*.parquet in the run folder)
    "log_completions": ("runtime.report_to", lambda c: bool({"wandb", "trackio"} & set(trackers(c)))),
    "run_name": ("model_name", lambda c: os.environ.get("WANDB_NAME") or c.run_name),
    "reward_weights": ("rewards", lambda c: [r["weight"] for r in c.rewards]),
}


def generation_batch(cfg) -> int:
    """The completions TRL samples at a time: grpo.generation_batch_size, else per-device batch x processes
    x grpo.steps_per_generation (by default gradient_accumulation_steps: one optimizer step's worth)."""
    t, launch = cfg.train, cfg.launch
    per_micro = t.per_device_train_batch_size * launch.num_processes * launch.num_machines
    return cfg.grpo.get("generation_batch_size") or per_micro * (
        cfg.grpo.get("steps_per_generation") or t.gradient_accumulation_steps
    )


def updates_per_batch(cfg) -> float:
    """How many optimizer steps each generation batch of samples trains: 1 (TRL's default, fresh samples
    at every step) unless grpo.steps_per_generation, grpo.generation_batch_size or grpo.num_iterations
    asks for reuse; fractional when a step trains on several batches."""
    t, launch = cfg.train, cfg.launch
    per_micro = t.per_device_train_batch_size * launch.num_processes * launch.num_machines
    return generation_batch(cfg) / (per_micro * t.gradient_accumulation_steps) * (cfg.grpo.get("num_iterations") or 1)


# The trackers transformers reports to (its INTEGRATION_TO_CALLBACK names; a test checks this list
# against it): name -> (the module it needs, what to pip install).
TRACKERS = {
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "clearml": ("clearml", "clearml"),
    "neptune": ("neptune", "neptune"),
    "dvclive": ("dvclive", "dvclive"),
    "swanlab": ("swanlab", "swanlab"),
    "codecarbon": ("codecarbon", "codecarbon"),
    "azure_ml": ("azureml", "azureml-core"),
    "dagshub": ("dagshub", "dagshub"),
    "flyte": ("flytekit", "flytekit"),
    "kubeflow": ("kubeflow", "kubeflow"),
}


def trackers(cfg) -> list[str]:
    """The trackers a run reports to: runtime.report_to, with wandb when runtime.use_wandb is true."""
    names = list(cfg.runtime.report_to)
    return names + ["wandb"] if cfg.runtime.use_wandb and "wandb" not in names else names


# What the Launch form offers (those installed here): trackers that publish nowhere unless set up to,
# and keep their files at a place of their own (W&B: <run>/wandb, Trackio: TRACKIO_DIR, TensorBoard: the
# run folder); the others are for the command line.
FORM_TRACKERS = ("wandb", "tensorboard", "trackio")


def installed_trackers(among=tuple(TRACKERS)) -> list[str]:
    """The trackers `among` whose package is installed here."""
    import importlib.util

    return [name for name in among if importlib.util.find_spec(TRACKERS[name][0]) is not None]


def grpo_field_types() -> dict[str, Any]:
    with HEAVY_IMPORTS:
        from trl import GRPOConfig  # only when a `grpo:` key is checked

    return field_types(GRPOConfig)


def grpo_default(name: str) -> Any:
    """GRPOConfig's default for field `name` (an enum as its plain value)."""
    with HEAVY_IMPORTS:
        from trl import GRPOConfig

    f = fields_of(GRPOConfig)[name]
    value = (
        f.default_factory()
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING
        else None
        if f.default is dataclasses.MISSING
        else f.default
    )
    return value.value if isinstance(value, enum.Enum) else value


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
