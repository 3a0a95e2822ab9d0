"""Checks of values that are each well typed but wrong, or wrong together (validate), and what a web
form may not launch."""

from __future__ import annotations

import math
from pathlib import Path

from core.builtin_models import BUILTIN_MODELS
from core.config.schema import LORA_BIASES, SECTIONS, RunConfig
from core.config.trl_args import TRACKERS, generation_batch, grpo_default, installed_trackers, trackers
from core.config.values import get_value
from core.errors import ConfigError
from core.rundir import config_path, model_dir

POSITIVE = [
    "max_new_tokens",
    "train.num_train_steps",
    "train.per_device_train_batch_size",
    "train.gradient_accumulation_steps",
    "train.learning_rate",
    "train.logging_steps",
    "dataset.n_train",
    "dataset.n_eval",
    "eval.batch_size",
    "eval.max_new_tokens",
    "launch.num_processes",
    "launch.num_machines",
    "launch.main_process_port",
]


def validate(cfg: RunConfig, variables: dict[str, str] | None = None) -> RunConfig:
    """Check values that are each well-typed but wrong, or wrong together: ConfigError with the first
    problem (problems() lists them all), naming the environment variable that set its key where one did
    (`variables`: config key -> variable)."""
    for key, message in problems(cfg):
        variable = (variables or {}).get(key)
        raise ConfigError(f"{message} (from the environment variable {variable})" if variable else message)
    return cfg


def problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every problem of `cfg`, as (the config key it is about, one line saying what is wrong and how
    to fix it), in the order validate() reports them: a form shows each under its field."""
    return list(_problems(cfg))


def _generation_batch_problems(cfg: RunConfig):
    """Each optimizer step trains on fresh samples unless the config asks for reuse: TRL's default
    generation batch is one step's completions (batch x accumulation x processes), which must then be
    whole groups of K. A generation batch the config sets (grpo.generation_batch_size, or
    grpo.steps_per_generation) must be whole groups, shared equally by the processes."""
    batch, accum, k = cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps, cfg.num_generations
    procs = cfg.launch.num_processes * cfg.launch.num_machines  # the world size
    if min(batch, accum, k, procs) < 1:
        return  # said elsewhere
    if cfg.grpo.get("generation_batch_size") and cfg.grpo.get("steps_per_generation"):
        yield (
            "grpo.steps_per_generation",
            (
                "grpo.generation_batch_size and grpo.steps_per_generation say the same "
                "thing two ways (TRL takes one): keep one of them"
            ),
        )
        return
    asked = cfg.grpo.get("generation_batch_size") or batch * procs * (cfg.grpo.get("steps_per_generation") or 0)
    completions = generation_batch(cfg)
    if 0 < cfg.dataset.n_train < completions // k:  # TRL samples whole batches of questions, K times each
        yield (
            "dataset.n_train",
            (
                f"dataset.n_train={cfg.dataset.n_train} is fewer than the {completions // k} questions a generation "
                f"batch samples ({completions} completions / num_generations={k}): TRL would train no step at all. "
                f"Set dataset.n_train={completions // k} or more, or a smaller "
                + ("grpo.generation_batch_size" if cfg.grpo.get("generation_batch_size") else "batch")
            ),
        )
    if not asked:
        if batch * accum * procs % k:
            accum_step, batch_step = k // math.gcd(batch * procs, k), k // math.gcd(accum * procs, k)
            yield (
                "train.gradient_accumulation_steps",
                (
                    f"an optimizer step trains on per_device_train_batch_size x gradient_accumulation_steps x processes "
                    f"= {batch} x {accum} x {procs} = {batch * accum * procs} completions, which must be whole groups of "
                    f"num_generations={k} for every step to train on fresh samples: set train.gradient_accumulation_steps="
                    f"{-(-accum // accum_step) * accum_step} (or train.per_device_train_batch_size="
                    f"{-(-batch // batch_step) * batch_step}), or ask for samples reused over several steps with "
                    "grpo.steps_per_generation"
                ),
            )
        return
    if asked % k:
        yield (
            "num_generations",
            (
                f"generation batch size {asked} is not divisible by num_generations={k}: TRL generates whole groups "
                "of K completions per prompt, so the generation batch must be a multiple of K"
            ),
        )
    if asked % (batch * procs):
        yield (
            "launch.num_processes",
            (
                f"generation batch size {asked} is not divisible by per_device_train_batch_size x num_processes x "
                f"num_machines = {batch} x {cfg.launch.num_processes} x {cfg.launch.num_machines}: TRL splits each "
                "generation batch into equal micro-batches on every process"
            ),
        )


def _problems(cfg: RunConfig):
    for section in (
        _number_problems,
        _generation_batch_problems,
        _launch_problems,
        _dataset_problems,
        _eval_problems,
        _lora_problems,
        _tracker_problems,
        _model_problems,
        _trainer_problems,
    ):
        yield from section(cfg)


def _number_problems(cfg: RunConfig):
    """Numbers out of their range: not positive, not finite, fewer than 1 iteration or 2 completions."""
    for key in POSITIVE:
        value = get_value(cfg, key)
        if value is not None and not value > 0:  # also NaN
            yield key, f"config key '{key}' has value {value!r}, expected a number greater than 0"
    numbers = (
        [(f"{name}", getattr(cfg, name)) for name in ("max_new_tokens",)]
        + [(f"{section}.{name}", value) for section in SECTIONS for name, value in vars(getattr(cfg, section)).items()]
        + [(f"grpo.{name}", value) for name, value in cfg.grpo.items()]
    )
    for key, value in numbers:
        if isinstance(value, float) and not math.isfinite(value):
            yield key, f"config key '{key}' has value {value!r}, expected a finite number"
    if cfg.grpo.get("num_iterations", 1) < 1:
        yield (
            "grpo.num_iterations",
            (
                f"config key 'grpo.num_iterations' has value {cfg.grpo['num_iterations']!r}, "
                "expected 1 or more: the number of updates per generation batch"
            ),
        )
    sampling = {  # TRL's sampling settings, in the ranges TRL and transformers take (else they fail mid-run)
        "temperature": (lambda v: v > 0, "greater than 0 (TRL samples with it; lower is less random)"),
        "top_k": (lambda v: v >= 0, "0 (off) or more"),
        "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "min_p": (lambda v: v is None or 0 <= v <= 1, "between 0 and 1"),
        "repetition_penalty": (lambda v: v > 0, "greater than 0 (1.0: none)"),
    }
    for name, (fits, expected) in sampling.items():
        if name in cfg.grpo and not fits(cfg.grpo[name]):
            yield f"grpo.{name}", f"config key 'grpo.{name}' has value {cfg.grpo[name]!r}, expected {expected}"
    least = {"steps_per_generation": 1, "generation_batch_size": 1, "warmup_steps": 0}  # TRL's batches, its schedule
    for name, low in least.items():
        if isinstance(value := cfg.grpo.get(name), (int, float)) and value < low:
            yield f"grpo.{name}", f"config key 'grpo.{name}' has value {value!r}, expected {low} or more"
    if not 0 <= cfg.train.seed < 2**32:
        yield (
            "train.seed",
            f"config key 'train.seed' has value {cfg.train.seed!r}, expected 0 to 2**32 - 1 (NumPy's seeds)",
        )
    for key in ("train.save_steps", "train.eval_steps"):
        if get_value(cfg, key) < 0:
            yield key, f"config key '{key}' has value {get_value(cfg, key)!r}, expected 0 (off) or more"
    if cfg.num_generations < 2:
        yield (
            "num_generations",
            (
                f"config key 'num_generations' has value {cfg.num_generations}, expected at least 2: "
                "GRPO scores each completion against the others sampled for the same prompt"
            ),
        )


def _launch_problems(cfg: RunConfig):
    """The processes and machines of a run, and the accelerate config that starts them."""
    launch = cfg.launch
    procs = launch.num_processes * launch.num_machines  # the world size
    if not 0 <= launch.machine_rank < launch.num_machines:
        yield (
            "launch.machine_rank",
            (
                f"config key 'launch.machine_rank' has value {launch.machine_rank}, expected 0 to "
                f"{launch.num_machines - 1}: each of the launch.num_machines={launch.num_machines} machines "
                "has its own rank, machine 0 first"
            ),
        )
    if launch.num_machines > 1 and not launch.main_process_ip:
        yield (
            "launch.main_process_ip",
            (
                f"launch.num_machines={launch.num_machines} needs launch.main_process_ip: the address of "
                "machine 0, where every machine meets (e.g. the first host of SLURM_JOB_NODELIST)"
            ),
        )
    if not 0 < launch.main_process_port < 65536:
        yield (
            "launch.main_process_port",
            (
                f"config key 'launch.main_process_port' has value "
                f"{launch.main_process_port}, expected a port number from 1 to 65535"
            ),
        )
    if cfg.launch.accelerate_config is not None and procs > 0:
        try:
            _check_accelerate_config(cfg)
        except ConfigError as e:
            yield "launch.accelerate_config", str(e)


def _dataset_problems(cfg: RunConfig):
    if cfg.dataset.level not in (1, 2, 3):
        yield "dataset.level", f"config key 'dataset.level' has value {cfg.dataset.level!r}, expected 1, 2 or 3"
    if cfg.dataset.name not in ("gsm8k", "synthetic"):
        yield "dataset.name", f"config key 'dataset.name' has value {cfg.dataset.name!r}, expected gsm8k or synthetic"
    if cfg.dataset.path is not None:
        path = Path(cfg.dataset.path)
        if cfg.dataset.name == "synthetic":
            yield (
                "dataset.path",
                (
                    f"config key 'dataset.path' has value {cfg.dataset.path!r}, but dataset.name is synthetic, which "
                    "generates its own problems: set dataset.name: gsm8k to read the file, or remove dataset.path"
                ),
            )
        elif not path.exists():
            yield (
                "dataset.path",
                (
                    f"config key 'dataset.path' has value {cfg.dataset.path!r}, but no such file or folder exists: "
                    "point it at a GSM8K-format .jsonl/.parquet file or a folder of them"
                ),
            )
        elif not (path.is_file() or path.is_dir()):
            yield (
                "dataset.path",
                (
                    f"config key 'dataset.path' has value {cfg.dataset.path!r}, which is not a regular file or folder "
                    "(a pipe or a device never ends): point it at a .jsonl/.parquet file"
                ),
            )


def _eval_problems(cfg: RunConfig):
    if not 0.0 < cfg.eval.top_p <= 1.0 or cfg.eval.temperature < 0:
        yield (
            "eval.temperature",
            (
                f"eval.temperature={cfg.eval.temperature} / eval.top_p={cfg.eval.top_p} are out "
                "of range: temperature must be >= 0 (0 = greedy), top_p in (0, 1]"
            ),
        )
    if cfg.stop_at_final and (cfg.grpo.get("use_vllm") or cfg.eval.backend == "vllm"):
        yield (
            "stop_at_final",
            (
                "stop_at_final ends completions inside transformers' generate, not vLLM's: set "
                "grpo.use_vllm=false and eval.backend=hf, or stop_at_final=false"
            ),
        )
    if cfg.eval.backend not in ("hf", "vllm"):
        yield "eval.backend", f"config key 'eval.backend' has value {cfg.eval.backend!r}, expected hf or vllm"
    if not 0.0 < cfg.eval.vllm_gpu_memory_utilization < 1.0:
        yield (
            "eval.vllm_gpu_memory_utilization",
            (
                f"config key 'eval.vllm_gpu_memory_utilization' has value {cfg.eval.vllm_gpu_memory_utilization!r}, "
                "expected a fraction between 0 and 1"
            ),
        )


def _trainer_problems(cfg: RunConfig):
    """Settings TRL's GRPOConfig or trainer refuses only once the model has loaded: said before it loads."""
    g = cfg.grpo
    if g.get("eval_strategy", "no") not in ("no", None):
        yield (
            "grpo.eval_strategy",
            f"config key 'grpo.eval_strategy' has value {g['eval_strategy']!r}: this project gives TRL no eval "
            "dataset (it evaluates itself: train.eval_steps), so TRL would refuse it; leave it at no",
        )
    if g.get("lr_scheduler_type") in ("reduce_lr_on_plateau", "greedy"):
        yield (
            "grpo.lr_scheduler_type",
            f"config key 'grpo.lr_scheduler_type' has value {g['lr_scheduler_type']!r}, which needs TRL's own "
            "evaluation (none here): choose another, e.g. constant_with_warmup",
        )
    if g.get("auto_find_batch_size"):
        yield (
            "grpo.auto_find_batch_size",
            "config key 'grpo.auto_find_batch_size' is true: TRL's GRPO does not support it (a generation batch "
            "must hold whole groups of K): set train.per_device_train_batch_size yourself",
        )
    needs = [
        not g.get("beta") and "set grpo.beta above 0",
        cfg.peft.r > 0 and "train every weight (peft.r=0: a LoRA run's reference is its model without adapters)",
    ]
    if g.get("sync_ref_model") and any(needs):
        yield (
            "grpo.sync_ref_model",
            "config key 'grpo.sync_ref_model' is true, which needs a reference model of its own: "
            + " and ".join(n for n in needs if n),
        )


def _lora_problems(cfg: RunConfig):
    lora = cfg.peft
    if lora.r < 0:
        yield "peft.r", f"config key 'peft.r' has value {lora.r}, expected 0 (full fine-tuning) or a LoRA rank above 0"
    if lora.r > 0:
        if not lora.lora_alpha > 0:
            yield "peft.lora_alpha", f"config key 'peft.lora_alpha' has value {lora.lora_alpha}, expected more than 0"
        if not 0 <= lora.lora_dropout < 1:
            yield (
                "peft.lora_dropout",
                (
                    f"config key 'peft.lora_dropout' has value {lora.lora_dropout}, expected a "
                    "fraction from 0 up to (not including) 1"
                ),
            )
        if lora.bias not in LORA_BIASES:
            yield "peft.bias", f"config key 'peft.bias' has value {lora.bias!r}, expected none, all or lora_only"
        if lora.target_modules != "all-linear" and not (
            isinstance(lora.target_modules, list)
            and lora.target_modules
            and all(isinstance(m, str) and m for m in lora.target_modules)
        ):
            yield (
                "peft.target_modules",
                (
                    f"config key 'peft.target_modules' has value {lora.target_modules!r}, "
                    "expected all-linear or a list of module names such as [q_proj, v_proj]"
                ),
            )
        if cfg.eval.enabled and cfg.eval.backend == "vllm":
            yield (
                "eval.backend",
                (
                    "eval.backend=vllm evaluates a model folder and a LoRA run (peft.r > 0) saves an "
                    "adapter: set eval.backend=hf, or peft.r=0"
                ),
            )


def _tracker_problems(cfg: RunConfig):
    for tracker in trackers(cfg):
        if not isinstance(tracker, str) or tracker not in TRACKERS:
            yield (
                "runtime.report_to",
                (
                    f"config key 'runtime.report_to' names {tracker!r}, which is not a tracker "
                    f"transformers reports to: use some of {', '.join(TRACKERS)}"
                ),
            )
        elif not installed_trackers((tracker,)):
            yield (
                "runtime.report_to",
                (
                    f"config key 'runtime.report_to' names {tracker}, which is not installed: "
                    f"pip install {TRACKERS[tracker][1]}"
                ),
            )


def _model_problems(cfg: RunConfig):
    name = cfg.model_name
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if not name.strip():
        yield (
            "model_name",
            "config key 'model_name' is empty: give a Hub id like Qwen/Qwen2.5-0.5B-Instruct, a model folder, or builtin:tiny",
        )
    elif name.startswith("builtin:"):
        if name not in BUILTIN_MODELS:
            yield (
                "model_name",
                (
                    f"config key 'model_name' has value {name!r}, but there is no such built-in model: "
                    f"use one of {', '.join(BUILTIN_MODELS)}"
                ),
            )
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            yield (
                "model_name",
                (
                    f"config key 'model_name' has value {name!r}, but there is no such GGUF file: give "
                    "an existing .gguf file (it is converted once into a model folder)"
                ),
            )
    elif (looks_like_path or Path(name).exists()) and not Path(name).is_dir():
        yield (
            "model_name",
            (
                f"config key 'model_name' has value {name!r}, but that model folder does not exist: "
                "give an existing local folder, a Hub id like Qwen/Qwen2.5-0.5B-Instruct, or builtin:tiny"
            ),
        )
    elif Path(name).is_dir() and not any(
        (Path(name) / f).is_file() for f in ("config.json", "adapter_config.json")
    ):  # transformers would fail on it after the eval data loads
        folder = Path(name)
        yield (
            "model_name",
            (
                f"config key 'model_name' has value {name!r}, a folder that holds no model (no config.json): "
                + (
                    f"a run folder's model is in its model/ folder ({model_dir(folder)})"
                    if config_path(folder).is_file()
                    else "give a model folder (a run's model/), a Hub id like Qwen/Qwen2.5-0.5B-Instruct, or builtin:tiny"
                )
            ),
        )


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
        raise ConfigError(
            f"{key} sets use_cpu: true, with which accelerate launch starts one process, not "
            f"{num_processes}: set use_cpu: false (CPU workers then train together over gloo)"
        )
    if cfg.train.eval_steps and cfg.eval.enabled and shards_weights(cfg):
        raise ConfigError(
            f"train.eval_steps={cfg.train.eval_steps} evaluates on rank 0 during training, but {path} "
            "spreads the weights over the workers: set train.eval_steps=0 (the evals before and "
            "after training still run)"
        )
    engine = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(acc.distributed_type)
    if engine and not torch.cuda.is_available():
        raise ConfigError(
            f"{key} uses {engine}, which accelerate applies on CUDA GPUs only and this machine has "
            "none: use configs/accelerate/ddp.yaml, or no accelerate config, to train on the CPU"
        )
    if engine == "DeepSpeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{key} uses DeepSpeed, which is not installed: pip install deepspeed")


def shards_weights(cfg: RunConfig) -> bool:
    """True when the run's accelerate config spreads the weights over the workers (FSDP, DeepSpeed
    ZeRO-3): then no single rank holds the whole model during training."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not cfg.launch.accelerate_config:
        return False
    acc = load_config_from_file(cfg.launch.accelerate_config)
    return acc.distributed_type == "FSDP" or (
        acc.distributed_type == "DEEPSPEED" and (acc.deepspeed_config or {}).get("zero_stage") == 3
    )


# GRPOConfig fields a web form may not set (core.runs.launch refuses them for the dashboard): they
# publish to the Hub or to a Trackio space, write outside the run folder, name files to load, or run a
# model repository's own Python code (trust_remote_code: TRL builds the reference model with it).
NOT_FROM_A_WEB_FORM = (
    "push_to_hub",
    "hub_token",
    "hub_private_repo",
    "hub_model_id",
    "hub_strategy",
    "hub_always_push",
    "hub_revision",
    "log_completions_hub_repo",
    "project",
    "trackio_space_id",
    "trackio_bucket_id",
    "trackio_static_space_id",
    "logging_dir",
    "deepspeed",
    "fsdp_config",
    "resume_from_checkpoint",
    "model_init_kwargs",
    "trust_remote_code",
)


def web_form_problem(cfg: RunConfig) -> str | None:
    """Why the dashboard may not launch `cfg` (one line), or None: a web page is not a shell."""
    for name in NOT_FROM_A_WEB_FORM:
        if name in cfg.grpo and cfg.grpo[name] not in (None, False, "", grpo_default(name)):
            return (
                f"grpo.{name} cannot be set from the dashboard (it publishes, writes outside the run folder or "
                "names files to load): run python -m core.train from a terminal for that"
            )
    return None
