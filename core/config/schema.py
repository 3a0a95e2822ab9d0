"""The config's shape: one dataclass per section, with help text and defaults, and the environment
variables the command line reads (ENV_KEYS)."""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from typing import Any


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


def _f_list(help: str):
    return field(default_factory=list, metadata={"help": help})


@dataclass
class TrainConfig:
    output_dir: str | None = _f(None, "Run directory; default runs/<run name>_<time> under RUNS_DIR or ./runs.")
    num_train_steps: int = _f(50, "Optimizer steps (TRL's max_steps).")
    per_device_train_batch_size: int = _f(1, "Completions per device per micro-step.")
    gradient_accumulation_steps: int = _f(
        8,
        "Micro-steps per optimizer step: a step trains on batch x accumulation "
        "x processes completions, whole groups of K, freshly sampled.",
    )
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
    backend: str = _f(
        "hf", "hf (transformers generate, batched) or vllm (CUDA only; pip install -r requirements-vllm.txt)."
    )
    vllm_gpu_memory_utilization: float = _f(
        0.3, "With backend vllm: the share of GPU memory eval's vLLM may take beside training."
    )


@dataclass
class RuntimeConfig:
    use_wandb: bool = _f(
        False,
        "Report to Weights & Biases (project WANDB_PROJECT, default simple_grpo); the same as wandb in report_to.",
    )
    report_to: list = _f_list(
        "Trackers the metrics and the eval before/after also go to: transformers' "
        "integration names (wandb, trackio, tensorboard, mlflow, ...); empty: none."
    )
    mps_fallback: bool = _f(True, "On Apple MPS, fall back to the CPU for unsupported ops.")


LORA_BIASES = ("none", "all", "lora_only")  # PEFT's LoraConfig.bias


@dataclass
class PeftConfig:
    r: int = _f(
        0,
        "LoRA rank: 0 trains every weight (full fine-tuning); more than 0 trains LoRA adapters of this "
        "rank and freezes the model's own weights (PEFT's LoraConfig, passed to TRL as peft_config).",
    )
    lora_alpha: int = _f(16, "LoRA scaling: the adapters' update is scaled by lora_alpha / r.")
    lora_dropout: float = _f(0.0, "Dropout on the adapters' input during training.")
    target_modules: str | list = _f(
        "all-linear",
        "The layers that get adapters: module names (e.g. [q_proj, "
        "v_proj]) or all-linear (every linear layer but the output one).",
    )
    bias: str = _f("none", "Biases trained too: none, all or lora_only.")


@dataclass
class LaunchConfig:
    num_processes: int = _f(1, "Worker processes on each machine (one per GPU); more than 1 starts them with torchrun.")
    accelerate_config: str | None = _f(
        None,
        "An accelerate config file (DeepSpeed, FSDP; e.g. "
        "configs/accelerate/fsdp.yaml): the workers start with accelerate launch.",
    )
    num_machines: int = _f(
        1,
        "Machines the run spans, each with launch.num_processes workers; its run folder must "
        "be on storage every machine sees.",
    )
    machine_rank: int = _f(
        0,
        "This machine's place among them, 0 to num_machines - 1; machine 0 hosts the "
        "rendezvous, holds the run folder's lock and writes the run's files.",
    )
    main_process_ip: str | None = _f(
        None, "The address of machine 0, which every machine can reach (needed with several machines)."
    )
    main_process_port: int = _f(29500, "The rendezvous port on machine 0 (several machines).")


@dataclass
class RunConfig:
    model_name: str = _f(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Hub id, local model folder, a .gguf file, builtin:tiny or builtin:smollm2-135m (offline).",
    )
    max_new_tokens: int = _f(256, "Completion length limit during training (TRL's max_completion_length).")
    num_generations: int = _f(8, "K: completions sampled per prompt; GRPO compares them within the group.")
    stop_at_final: bool = _f(
        False,
        "End each completion at its Final line: once `Final: <number>` and a newline "
        "are written, the next token is the end of the message, in sampling and in eval "
        "(transformers generation).",
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    rewards: list = field(
        default_factory=lambda: [{"name": "gsm8k", "weight": 1.0}],
        metadata={
            "help": "Reward functions and weights: built-in names (gsm8k, gsm8k_lenient, format, length_penalty) "
            "or package.module:function; TRL adds them up with these weights."
        },
    )
    grpo: dict = field(default_factory=dict, metadata={"help": "Any other GRPOConfig field, passed to TRL."})

    @property
    def run_name(self) -> str:
        short = re.split(r"[/:]", self.model_name.rstrip("/"))[-1]
        return f"grpo_{short}_K{self.num_generations}_steps{self.train.num_train_steps}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "train": TrainConfig,
    "dataset": DatasetConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
    "peft": PeftConfig,
    "launch": LaunchConfig,
}

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


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def field_types(cls) -> dict[str, Any]:
    """A dataclass's field types, resolved (`typing.get_type_hints`)."""
    return typing.get_type_hints(cls)
