"""Config loading: the seed's shapes, precedence, the grpo passthrough and every user error."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from core.config import (
    ConfigError,
    RunConfig,
    changed_settings,
    default_runs_dir,
    format_value,
    grpo_default,
    load_config,
    parse_setting,
    problems,
    setting,
    shards_weights,
)
from tests.conftest import ROOT, run_cli

SEED_YAML = """
model_name: Qwen/Qwen2.5-0.5B-Instruct
max_new_tokens: 256
num_generations: 16
train:
  output_dir: runs/seed
  num_train_steps: 50
  per_device_train_batch_size: 1
  gradient_accumulation_steps: 4
  learning_rate: 5e-6
  logging_steps: 1
  save_steps: 25
  eval_steps: 10
  seed: 42
runtime:
  use_wandb: true
  mps_fallback: true
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_seed_shape_loads_unchanged(tmp_path):
    cfg = load_config(write(tmp_path, SEED_YAML), check=False)
    assert cfg.num_generations == 16 and cfg.max_new_tokens == 256
    assert cfg.train.learning_rate == 5e-6  # YAML reads `5e-6` as text; it must become a float
    assert cfg.train.output_dir == "runs/seed" and cfg.train.save_steps == 25
    assert cfg.runtime.use_wandb is True
    assert cfg.run_name == "grpo_Qwen2.5-0.5B-Instruct_K16_steps50"
    # its values, K=16 with 1 x 4 completions a step, would train 4 steps on each batch of samples: refused,
    # with the values that give every step fresh samples
    assert problems(cfg) == [
        (
            "train.gradient_accumulation_steps",
            (
                "an optimizer step trains on per_device_train_batch_size x gradient_accumulation_steps x processes = 1 x 4 x 1 "
                "= 4 completions, which must be whole groups of num_generations=16 for every step to train on fresh samples: "
                "set train.gradient_accumulation_steps=16 (or train.per_device_train_batch_size=4), or ask for samples "
                "reused over several steps with grpo.steps_per_generation"
            ),
        )
    ]


def test_seed_shape_with_dataset_string_and_later_mapping(tmp_path):
    # The seed wrote `dataset: gsm8k` and, further down, a `dataset:` mapping (YAML keeps the last).
    cfg = load_config(
        write(tmp_path, "dataset: gsm8k\n" + SEED_YAML + "dataset:\n  n_train: 7\n  n_eval: 3\n"), env={}, check=False
    )
    assert (cfg.dataset.name, cfg.dataset.n_train, cfg.dataset.n_eval) == ("gsm8k", 7, 3)


def test_seed_shape_with_top_level_subset_sizes(tmp_path):
    cfg = load_config(write(tmp_path, SEED_YAML + "dataset: gsm8k\nn_train: 9\nn_eval: 4\n"), check=False)
    assert (cfg.dataset.name, cfg.dataset.n_train, cfg.dataset.n_eval) == ("gsm8k", 9, 4)


def test_precedence_defaults_yaml_env_set(tmp_path):
    path = write(tmp_path, "num_generations: 4\ntrain: {num_train_steps: 10, learning_rate: 1.0e-5}\n")
    assert load_config().train.num_train_steps == 50  # default
    assert load_config(path).train.num_train_steps == 10  # YAML over default
    cfg = load_config(path, env={"MAX_STEPS": "20", "LR": "3e-5", "SEED": "7"})
    assert (cfg.train.num_train_steps, cfg.train.learning_rate, cfg.train.seed) == (20, 3e-5, 7)  # env over YAML
    cfg = load_config(path, sets=["train.num_train_steps=30"], env={"MAX_STEPS": "20"})
    assert cfg.train.num_train_steps == 30  # --set over env


@pytest.mark.parametrize("text", ["010", "1:30", "0x1F", "1_000", "+7", "0", "1e3"])
def test_a_number_from_set_reads_as_from_the_environment(text):
    """--set reads a value as YAML, whose 1.1 rules make 010 octal (8), 1:30 base 60 (90), 0x1F hex (31):
    a number is read as its environment variable is (SEED, LR), whatever it is or whatever is wrong with it."""
    for key, env in (("train.seed", "SEED"), ("train.learning_rate", "LR")):
        try:
            by_env = load_config(env={env: text}).to_dict()["train"][key.split(".")[1]]
        except ConfigError as e:
            by_env = str(e).split(" has value ")[1].split(" (from the environment")[0]  # what was wrong
        try:
            by_set = load_config(sets=[f"{key}={text}"]).to_dict()["train"][key.split(".")[1]]
        except ConfigError as e:
            by_set = str(e).split(" has value ")[1]
        assert by_set == by_env, (key, text)
    assert load_config(sets=["train.seed=010"]).train.seed == 10


def test_every_env_variable_maps_to_its_key():
    env = {
        "MODEL_NAME": "builtin:tiny",
        "OUTPUT_DIR": "runs/x",
        "MAX_STEPS": "3",
        "NUM_GENERATIONS": "6",
        "MAX_NEW_TOKENS": "64",
        "BATCH_SIZE": "2",
        "GRAD_ACCUM": "3",
        "LR": "0.001",
        "N_TRAIN": "11",
        "N_EVAL": "12",
        "SEED": "13",
    }
    cfg = load_config(env=env)
    assert (
        cfg.model_name,
        cfg.train.output_dir,
        cfg.train.num_train_steps,
        cfg.num_generations,
        cfg.max_new_tokens,
        cfg.train.per_device_train_batch_size,
        cfg.train.gradient_accumulation_steps,
        cfg.train.learning_rate,
        cfg.dataset.n_train,
        cfg.dataset.n_eval,
        cfg.train.seed,
    ) == ("builtin:tiny", "runs/x", 3, 6, 64, 2, 3, 0.001, 11, 12, 13)


def test_default_output_dir_is_under_runs_dir(monkeypatch):
    monkeypatch.delenv("RUNS_DIR", raising=False)
    assert default_runs_dir() == ROOT / "runs"  # wherever the command runs from: the dashboard lists it
    assert load_config().train.output_dir.startswith(f"{ROOT}/runs/grpo_Qwen2.5-0.5B-Instruct_K8_steps50_")
    monkeypatch.setenv("RUNS_DIR", "/data/my_runs")
    assert load_config().train.output_dir.startswith("/data/my_runs/grpo_")


def test_the_environment_layer_is_only_read_when_given(monkeypatch):
    monkeypatch.setenv("MAX_STEPS", "7")
    assert load_config().train.num_train_steps == 50
    assert load_config(env=os.environ).train.num_train_steps == 7


# Two of the dashboard's page threads reaching TRL and transformers for the first time at once.
TWO_TABS_AT_ONCE = """
import threading
from core.config import grpo_default
from dashboard.grpo_form import grpo_options
start, errors = threading.Barrier(2), []
def tab(first_look):
    start.wait()
    try:
        first_look()
    except Exception as e:
        errors.append(repr(e))
tabs = [threading.Thread(target=tab, args=(f,)) for f in (grpo_options, lambda: grpo_default("loss_type"))]
for t in tabs:
    t.start()
for t in tabs:
    t.join()
print(errors)
"""


@pytest.mark.slow  # a fresh interpreter imports TRL
def test_two_threads_importing_trl_at_once_both_get_it():
    """core.HEAVY_IMPORTS. Without it, this failed on this project's machine in most tries, as a race
    does (docs/measured.md, "The test suite"), and once failed the browser test's Launch page."""
    env = {**os.environ, "STREAMLIT_GLOBAL_SHOW_WARNING_ON_DIRECT_EXECUTION": "false"}
    done = subprocess.run(
        [sys.executable, "-c", TWO_TABS_AT_ONCE], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("[]"), done.stdout + done.stderr[-2000:]


def test_grpo_passthrough_is_typed_from_grpo_config():
    cfg = load_config(
        sets=["grpo.beta=0.04", "grpo.loss_type=grpo", "grpo.mask_truncated_completions=true", "grpo.num_iterations=2"]
    )
    assert cfg.grpo == {"beta": 0.04, "loss_type": "grpo", "mask_truncated_completions": True, "num_iterations": 2}


SHIPPED_PRESETS = {  # preset: key values it exists for
    "tiny_cpu.yaml": {
        "model_name": "builtin:tiny",
        "dataset.name": "synthetic",
        "train.num_train_steps": 20,
        "runtime.use_wandb": False,
    },
    "demo_cpu.yaml": {
        "model_name": "builtin:tiny",
        "dataset.level": 1,
        "train.num_train_steps": 700,
        "train.per_device_train_batch_size": 64,
        "train.gradient_accumulation_steps": 1,
        "dataset.n_train": 256,
        "dataset.n_eval": 300,
        "grpo.temperature": 0.3,
        "grpo.beta": 0.04,
        "train.save_steps": 175,
        "grpo.save_only_model": True,
        "runtime.use_wandb": False,
    },
    "smollm2_cpu.yaml": {
        "model_name": "builtin:smollm2-135m",
        "stop_at_final": True,
        "grpo.temperature": 0.7,
        "grpo.warmup_steps": 5,
        "train.save_steps": 10,
        "grpo.save_only_model": True,
        "runtime.use_wandb": False,
    },
    "smollm2_lora_cpu.yaml": {
        "model_name": "builtin:smollm2-135m",
        "peft.r": 16,
        "peft.target_modules": "all-linear",
        "train.learning_rate": 2e-4,
        "stop_at_final": True,
    },
    "gpu.yaml": {"model_name": "Qwen/Qwen2.5-0.5B-Instruct", "dataset.name": "gsm8k", "num_generations": 8},
    "local_debug.yaml": {
        "model_name": "Qwen/Qwen2.5-0.5B-Instruct",
        "num_generations": 16,
        "train.per_device_train_batch_size": 1,
    },
}


@pytest.mark.parametrize("preset", sorted(SHIPPED_PRESETS))
def test_shipped_presets_load_with_their_key_values(preset):
    assert (ROOT / "configs" / preset).is_file()
    cfg = load_config(ROOT / "configs" / preset)
    assert {key: setting(cfg, key) for key in SHIPPED_PRESETS[preset]} == SHIPPED_PRESETS[preset]
    assert cfg.eval.enabled


def test_every_form_field_reads_back_its_own_text():
    # the Launch form shows each GRPOConfig default as text and sends back only what changed
    from dashboard.grpo_form import grpo_options

    cfg = RunConfig()
    for fields in grpo_options().values():
        for f in fields:
            key, value = f"grpo.{f.name}", setting(cfg, f"grpo.{f.name}")
            assert parse_setting(key, format_value(value)) == value, key
    assert changed_settings(cfg, {"grpo.beta": 0.0, "grpo.loss_type": "dapo", "train.seed": 42}) == []
    assert changed_settings(cfg, {"grpo.beta": 0.04, "train.seed": 7, "dataset.path": None}) == [
        "grpo.beta=0.04",
        "train.seed=7",
    ]


@pytest.mark.parametrize(
    "yaml_text, sets, env, expected",
    [
        # unknown key, with the closest valid one suggested
        ("num_generation: 4\n", [], {}, "unknown config key 'num_generation': did you mean 'num_generations'?"),
        # two wrong keys, a file's and a --set's: both named, in one line
        (
            "num_generation: 4\ntrain: {learning_rat: 1.0}\n",
            ["max_new_token=8"],
            {},
            "'num_generation': did you mean 'num_generations'?; unknown config key 'train.learning_rat': did you mean "
            "'train.learning_rate'?; unknown config key 'max_new_token'",
        ),
        ("train: {learning_rat: 1.0}\n", [], {}, "did you mean 'train.learning_rate'?"),
        ("", ["grpo.betta=0.1"], {}, "did you mean 'grpo.beta'?"),
        # a GRPOConfig field this config already sets elsewhere
        ("", ["grpo.learning_rate=0.1"], {}, "'grpo.learning_rate' is set from 'train.learning_rate'"),
        # wrong types
        ("num_generations: four\n", [], {}, "'num_generations' has value 'four', expected a whole number"),
        ("train: {learning_rate: [1]}\n", [], {}, "'train.learning_rate' has value [1], expected a number"),
        ("runtime: {use_wandb: maybe}\n", [], {}, "'runtime.use_wandb' has value 'maybe', expected true/false"),
        (
            "",
            [],
            {"MAX_STEPS": "ten"},
            "'train.num_train_steps' has value 'ten', expected a whole number (from the environment variable MAX_STEPS)",
        ),
        (
            "",
            [],
            {"MAX_STEPS": "0"},  # a value of the right type out of its range: the variable named too
            "'train.num_train_steps' has value 0, expected a number greater than 0 (from the environment variable "
            "MAX_STEPS)",
        ),
        ("train: 5\n", [], {}, "'train' must be a mapping"),
        # K < 2: GRPO needs a group to compare within
        ("num_generations: 1\n", [], {}, "'num_generations' has value 1, expected at least 2"),
        # a generation batch that is not a whole number of groups
        ("num_generations: 4\n", ["grpo.generation_batch_size=6"], {}, "not divisible by num_generations=4"),
        # ... or that several processes cannot share equally
        (
            "num_generations: 4\n",
            ["launch.num_processes=3", "grpo.generation_batch_size=8"],
            {},
            "is not divisible by per_device_train_batch_size x num_processes x num_machines = 1 x 3 x 1",
        ),
        # an optimizer step whose completions are not whole groups: fresh samples at every step are impossible
        (
            "num_generations: 8\n",
            ["train.gradient_accumulation_steps=4"],
            {},
            "= 1 x 4 x 1 = 4 completions, which must be whole groups of num_generations=8 for every step to train on "
            "fresh samples: set train.gradient_accumulation_steps=8 (or train.per_device_train_batch_size=2)",
        ),
        ("num_generations: 3\n", ["launch.num_processes=2"], {}, "= 1 x 8 x 2 = 16 completions"),
        ("", ["grpo.generation_batch_size=16", "grpo.steps_per_generation=2"], {}, "say the same thing two ways"),
        # fewer training questions than a generation batch samples: TRL would train no step
        (
            "",
            ["dataset.n_train=3", "train.per_device_train_batch_size=8", "train.gradient_accumulation_steps=4"],
            {},
            "dataset.n_train=3 is fewer than the 4 questions a generation batch samples (32 completions / "
            "num_generations=8): TRL would train no step at all. Set dataset.n_train=4 or more",
        ),
        (  # ... of several processes, or of a generation batch the config sets
            "",
            [
                "dataset.n_train=5",
                "train.per_device_train_batch_size=8",
                "train.gradient_accumulation_steps=1",
                "launch.num_processes=6",
            ],
            {},
            "the 6 questions a generation batch samples (48 completions / num_generations=8)",
        ),
        (
            "",
            ["dataset.n_train=5", "grpo.generation_batch_size=64"],
            {},
            "fewer than the 8 questions a generation batch samples (64 completions / num_generations=8): TRL "
            "would train no step at all. Set dataset.n_train=8 or more, or a smaller grpo.generation_batch_size",
        ),
        ("", ["launch.num_processes=0"], {}, "'launch.num_processes' has value 0"),
        # non-positive values
        (
            "train: {learning_rate: 0}\n",
            [],
            {},
            "'train.learning_rate' has value 0.0, expected a number greater than 0",
        ),
        ("train: {num_train_steps: -1}\n", [], {}, "'train.num_train_steps' has value -1"),
        ("max_new_tokens: 0\n", [], {}, "'max_new_tokens' has value 0"),
        ("dataset: {n_train: 0}\n", [], {}, "'dataset.n_train' has value 0"),
        ("n_eval: -3\n", [], {}, "'dataset.n_eval' has value -3"),
        # data and model that do not exist
        ("dataset: {path: /nonexistent/gsm8k.jsonl}\n", [], {}, "'dataset.path' has value '/nonexistent/gsm8k.jsonl'"),
        ("dataset: {name: mnist}\n", [], {}, "expected gsm8k or synthetic"),
        ("model_name: ./no/such/model\n", [], {}, "that model folder does not exist"),
        ("model_name: builtin:huge\n", [], {}, "there is no such built-in model: use one of builtin:tiny"),
        ("", ["model_name="], {}, "config key 'model_name' is empty: give a Hub id"),
        ("", [f"model_name={ROOT}/configs"], {}, "a folder that holds no model (no config.json): give a model folder"),
        # eval backends
        ("eval: {backend: tgi}\n", [], {}, "'eval.backend' has value 'tgi', expected hf or vllm"),
        ("eval: {vllm_gpu_memory_utilization: 1.5}\n", [], {}, "expected a fraction between 0 and 1"),
        # accelerate config files that accelerate launch would refuse, or that cannot start the workers
        ("launch: {accelerate_config: /nonexistent.yaml}\n", [], {}, "('/nonexistent.yaml') names no file"),
        (
            "",
            [f"launch.accelerate_config={ROOT}/configs/tiny_cpu.yaml"],
            {},
            "is not a valid accelerate config: A `distributed_type` must be specified in the config file.",
        ),
        # trackers: transformers' names, installed here
        (
            "runtime: {report_to: [tensorbord]}\n",
            [],
            {},
            "names 'tensorbord', which is not a tracker transformers reports to",
        ),
        ("", ["runtime.report_to=[comet_ml]"], {}, "names comet_ml, which is not installed: pip install comet-ml"),
        ("", ["runtime.report_to=tensorboard"], {}, "'runtime.report_to' has value 'tensorboard', expected a list"),
        # LoRA: PEFT's names and values
        ("peft: {r: -2}\n", [], {}, "'peft.r' has value -2, expected 0 (full fine-tuning) or a LoRA rank above 0"),
        ("peft: {r: 8, bias: some}\n", [], {}, "'peft.bias' has value 'some', expected none, all or lora_only"),
        ("peft: {r: 8, lora_dropout: 1.5}\n", [], {}, "'peft.lora_dropout' has value 1.5, expected a fraction"),
        ("peft: {r: 8, target_modules: []}\n", [], {}, "expected all-linear or a list of module names"),
        ("peft: {rank: 8}\n", [], {}, "unknown config key 'peft.rank'"),
        ("peft: {r: 8, target_modules: q_proj}\n", [], {}, "expected all-linear or a list of module names"),
        (
            "peft: {r: 8}\neval: {backend: vllm}\n",
            [],
            {},
            "a LoRA run (peft.r > 0) saves an adapter: set eval.backend=hf",
        ),
        # malformed --set
        ("", ["train.num_train_steps"], {}, "must look like key=value"),
        # keys that YAML reads as something other than a name
        ("1: 2\n", [], {}, "has a key 1 that is not a name (YAML reads 1, yes, on and null as a number"),
        ("yes: 2\n", [], {}, "has a key True that is not a name"),
        # sampling settings TRL and transformers refuse mid-run, and seeds NumPy refuses
        ("", ["grpo.temperature=0"], {}, "'grpo.temperature' has value 0.0, expected greater than 0"),
        ("", ["grpo.top_k=-5"], {}, "'grpo.top_k' has value -5, expected 0 (off) or more"),
        ("", ["grpo.top_p=1.5"], {}, "'grpo.top_p' has value 1.5, expected in (0, 1]"),
        (
            "",
            ["trian.max_new_tokens=5"],
            {},
            "'trian.max_new_tokens': did you mean 'max_new_tokens' (a top-level key)?",
        ),
        ("", ["train.seed.x=1"], {}, "'train.seed.x': a section's keys are one level deep, such as train.seed"),
        ("", ["trian.num_train_steps=5"], {}, "unknown config key 'trian.num_train_steps': did you mean 'train.num_"),
        ("", ["grpo.eval_strategy=steps"], {}, "this project gives TRL no eval dataset"),
        ("", ["grpo.lr_scheduler_type=reduce_lr_on_plateau"], {}, "which needs TRL's own evaluation (none here)"),
        ("", ["grpo.auto_find_batch_size=true"], {}, "TRL's GRPO does not support it"),
        ("", ["grpo.sync_ref_model=true"], {}, "needs a reference model of its own: set grpo.beta above 0"),
        ("", ["grpo.sync_ref_model=true", "grpo.beta=0.1", "peft.r=8"], {}, "own: train every weight (peft.r=0"),
        ("", ["grpo.steps_per_generation=0"], {}, "'grpo.steps_per_generation' has value 0, expected 1 or more"),
        ("", ["grpo.generation_batch_size=-16"], {}, "'grpo.generation_batch_size' has value -16, expected 1 or more"),
        ("", ["grpo.warmup_steps=-1"], {}, "'grpo.warmup_steps' has value -1.0, expected 0 or more"),
        ("", ["grpo.min_p=2"], {}, "'grpo.min_p' has value 2.0, expected between 0 and 1"),
        ("", ["grpo.repetition_penalty=0"], {}, "'grpo.repetition_penalty' has value 0.0, expected greater than 0"),
        ("", ["train.seed=-1"], {}, "'train.seed' has value -1, expected 0 to 2**32 - 1"),
        ("", ["train.seed=4294967296"], {}, "'train.seed' has value 4294967296, expected 0 to 2**32 - 1"),
    ],
)
def test_bad_config_is_one_clear_config_error(tmp_path, yaml_text, sets, env, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, yaml_text), sets=sets, env=env)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_run_folder_given_as_the_model_points_at_its_model_folder(tmp_path):
    (tmp_path / "run.yaml").write_text("{}\n")
    with pytest.raises(ConfigError) as info:
        load_config(sets=[f"model_name={tmp_path}"])
    assert str(info.value).endswith(f"a run folder's model is in its model/ folder ({tmp_path / 'model'})")
    (tmp_path / "adapter_config.json").write_text("{}")  # a LoRA run's model/ holds an adapter: a model
    load_config(sets=[f"model_name={tmp_path}"])


def test_missing_file_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file '/dev/null' is not a regular file"):
        load_config("/dev/null")  # there, but no file: said so, not "does not exist"
    with pytest.raises(ConfigError, match=r"config file '/proc/1/mem' cannot be read \("):
        load_config("/proc/1/mem")  # a file no one may read, even root
    with pytest.raises(ConfigError, match="is not valid YAML at line 3"):
        load_config(write(tmp_path, "train:\n  seed: [1, 2\n"))


@pytest.mark.slow  # starts python -m core.train
def test_cli_prints_one_line_and_exits_2(tmp_path):
    result = run_cli("--config", str(write(tmp_path, "num_generations: 1\n")))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: config key 'num_generations'")


def test_accelerate_config_that_starts_one_process(tmp_path):
    single = tmp_path / "single.yaml"
    single.write_text("distributed_type: MULTI_GPU\nuse_cpu: true\n")
    with pytest.raises(ConfigError, match="sets use_cpu: true, with which accelerate launch starts one process, not 2"):
        load_config(None, sets=[f"launch.accelerate_config={single}", "launch.num_processes=2"])


def test_eval_during_training_needs_the_whole_model_on_rank_0(tmp_path):
    zero3 = tmp_path / "zero3.yaml"
    zero3.write_text("distributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 3}\n")
    for path in (zero3, ROOT / "configs" / "accelerate" / "fsdp.yaml"):
        with pytest.raises(
            ConfigError,
            match="train.eval_steps=5 evaluates on rank 0 during training, but .* "
            "spreads the weights over the workers: set train.eval_steps=0",
        ):
            load_config(None, sets=[f"launch.accelerate_config={path}", "train.eval_steps=5"])
    cfg = RunConfig()
    for name, sharded in [("fsdp", True), ("zero2", False), ("ddp", False)]:  # ZeRO-2 keeps the whole model
        cfg.launch.accelerate_config = str(ROOT / "configs" / "accelerate" / f"{name}.yaml")
        assert shards_weights(cfg) is sharded


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error for a machine without CUDA")
@pytest.mark.parametrize("name, engine", [("fsdp", "FSDP"), ("zero2", "DeepSpeed")])
def test_gpu_only_accelerate_config_on_a_cpu_machine(name, engine):
    with pytest.raises(ConfigError, match=f"uses {engine}, which accelerate applies on CUDA GPUs only"):
        load_config(None, sets=[f"launch.accelerate_config={ROOT}/configs/accelerate/{name}.yaml"])


def test_shipped_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    engines = {
        name: load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml")).distributed_type
        for name in ("ddp", "fsdp", "zero2")
    }
    assert engines == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED"}


def test_the_choices_are_those_trl_documents():
    # GRPO_CHOICES is read off TRL's help text for each field: a TRL release that changes them fails here
    import dataclasses

    from trl import GRPOConfig

    from core.config import GRPO_CHOICES

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(GRPOConfig)}
    for name, values in GRPO_CHOICES.items():
        assert grpo_default(name) in values, name
        for value in values:
            assert re.search(f"[`']{re.escape(value)}[`']", helps[name]), (name, value)  # quoted, as TRL writes it


def test_problems_lists_every_problem_and_validate_reports_the_first():
    from core.config import problems

    cfg = load_config(sets=["num_generations=1", "train.learning_rate=0", "dataset.level=7"], check=False)
    found = problems(cfg)
    assert [key for key, _ in found] == ["train.learning_rate", "num_generations", "dataset.level"]
    with pytest.raises(ConfigError) as e:
        load_config(sets=["num_generations=1", "train.learning_rate=0", "dataset.level=7"])
    assert str(e.value) == found[0][1]


def test_trackers_are_transformers_own_and_use_wandb_means_wandb():
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    from core.config import TRACKERS, trackers
    from core.grpo import grpo_args

    assert set(TRACKERS) == set(INTEGRATION_TO_CALLBACK)  # a transformers release that adds one fails here
    assert trackers(load_config(sets=["runtime.use_wandb=true"])) == ["wandb"]
    cfg = load_config(sets=["runtime.report_to=[tensorboard, trackio]", "runtime.use_wandb=true"])
    assert trackers(cfg) == ["tensorboard", "trackio", "wandb"]
    args = grpo_args(cfg, "cpu")
    assert (args.report_to, args.log_completions, args.project) == (
        ["tensorboard", "trackio", "wandb"],
        True,
        "simple_grpo",
    )
    args = grpo_args(load_config(sets=["runtime.report_to=[tensorboard]"]), "cpu")
    assert (args.report_to, args.log_completions) == (["tensorboard"], False)


def test_a_path_that_starts_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    # a shell expands no `~` after `--set key=`: the config does, for the keys that hold paths
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "gsm8k.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = load_config(
        sets=["train.output_dir=~/runs/x", "dataset.name=gsm8k", "dataset.path=~/gsm8k.jsonl", "model_name=~/model"]
    )
    assert (cfg.train.output_dir, cfg.dataset.path, cfg.model_name) == (
        str(tmp_path / "runs" / "x"),
        str(tmp_path / "gsm8k.jsonl"),
        str(tmp_path / "model"),
    )
    assert load_config(sets=["train.output_dir=runs/~x"]).train.output_dir == "runs/~x"  # only a leading one
    from core.runs import check_form  # the Launch form reads its fields the same way

    form = check_form(
        ROOT / "configs" / "tiny_cpu.yaml", {"dataset.name": "gsm8k"}, {"dataset.path": "~/gsm8k.jsonl"}, ""
    )
    assert form.problems == {}
