"""Launch: a preset (or an earlier run's settings), a form with the main knobs, then a subprocess."""

import re
import shlex
import time

import streamlit as st

from core import REPO
from core.config import (
    FORM_TRACKERS,
    LORA_BIASES,
    ConfigError,
    choices,
    format_value,
    installed_trackers,
    load_config,
    setting,
    trackers,
)
from core.data import LEVELS
from core.lifecycle import machine_commands
from core.model import has_cuda
from core.preflight import in_subprocess
from core.rundir import config_path
from core.runs import check_form, launch, run_folder, save_preset
from dashboard.caches import runs_root
from dashboard.grpo_form import grpo_options, is_toggle
from dashboard.widgets import plain, show_completion

SOURCES = {"GSM8K (Hugging Face Hub)": "gsm8k", "Local file or folder": "path", "Synthetic (offline)": "synthetic"}

# The form's fields by config key: what a problem with that key is called under its field.
FIELDS = {
    "run name": "Run name",
    "model_name": "Model",
    "num_generations": "K: completions per prompt",
    "max_new_tokens": "Max new tokens",
    "train.num_train_steps": "Training steps",
    "train.per_device_train_batch_size": "Per-device batch",
    "train.gradient_accumulation_steps": "Gradient accumulation",
    "train.learning_rate": "Learning rate",
    "dataset.n_train": "Training questions",
    "dataset.n_eval": "Eval questions",
    "train.seed": "Seed",
    "dataset.name": "Data",
    "dataset.path": "Local data path",
    "dataset.level": "Synthetic difficulty",
    "launch.num_processes": "Processes (GPUs)",
    "launch.accelerate_config": "Accelerate config",
    "eval.backend": "Eval backend",
    "stop_at_final": "End at the Final line",
    "runtime.report_to": "Trackers",
    "peft.r": "LoRA rank r",
    "peft.lora_alpha": "lora_alpha",
    "peft.lora_dropout": "lora_dropout",
    "peft.target_modules": "target_modules",
    "peft.bias": "bias",
}

ACCELERATE_CONFIGS = [str(p.relative_to(REPO)) for p in sorted((REPO / "configs" / "accelerate").glob("*.yaml"))]

st.title("Launch a run")
presets = sorted((REPO / "configs").glob("*.yaml"))
from_run = st.query_params.get("from_run")
bases = ([f"settings of run {from_run}"] if from_run else []) + [p.name for p in presets]
choice = st.selectbox("Start from", bases, key="base", help="A preset from configs/, or an earlier run's settings.")
try:
    base_path = (
        config_path(run_folder(runs_root(), from_run))
        if choice.startswith("settings of")
        else REPO / "configs" / choice
    )
    base = load_config(base_path)  # a run's run.yaml is a complete config file too
except (ConfigError, ValueError) as e:  # no such run, one without settings of ours (a TRL run's), a damaged one
    st.error(f"Cannot start from {plain(choice)}: {plain(str(e))}. Choose a preset above.")
    st.stop()
base_label = str(base_path.relative_to(REPO) if base_path.is_relative_to(REPO) else base_path)

groups = grpo_options()
cuda = has_cuda()
k = f"{choice}:"  # widget keys per base, so switching presets resets the form
errors = st.session_state.get(k + "errors", {})  # config key -> what is wrong, from the last Check or Launch


def in_form_words(text: str) -> str:
    """A finding or a fix that names config keys (`max_new_tokens=32`, `max_new_tokens (16)`), in the form's
    words ('Max new tokens' = 32, 'Max new tokens' (16))."""

    def label(match):
        key, setting = match.group(1), match.group(2)
        name = FIELDS.get(key) or (f"{key.removeprefix('grpo.')} (Advanced)" if key.startswith("grpo.") else None)
        return (f"'{name}' = " if setting else f"'{name}'") if name else match.group(0)

    return re.sub(r"'?\b([a-z_]+(?:\.[a-z_]+)?)\b'?(=?)", label, text)  # a quoted key: its quotes too


def preflight_view(report: dict | None, why: str) -> None:
    """The pre-flight's report (core.preflight's JSON), in the form's words."""
    st.subheader("Before launch")
    if report is None:
        st.error(f"The check could not run: {plain(in_form_words(why))}")
        return
    said = report["verdict"][0].upper() + report["verdict"][1:] + "."
    if report["signal"] == "none":
        st.error(said)
    elif report["signal"] == "weak":
        st.warning(said)
    else:
        st.success(
            f"{said} {1 - report['groups_without_signal']:.0%} of the starting model's groups got rewards that differ."
        )
    sure = report["sure"]
    cols = st.columns(4)
    for col, (name, label) in zip(
        cols,
        (
            ("groups_without_signal", "Groups without a signal"),
            ("well_formed", "Well-formed Final line"),
            ("correct", "Correct"),
            ("truncated", "Cut at Max new tokens"),
        ),
    ):
        col.metric(
            label,
            f"{report[name]:.0%}",
            f"95%: {sure[name][0]:.0%}–{sure[name][1]:.0%}",  # an interval, not a change: no arrow
            delta_color="off",
            delta_arrow="off",
        )
    st.caption(
        f"From {report['questions']} training questions × K = {report['samples']} samples of the starting "
        f"model; reward mean {report['reward_mean']:.3f} (std {report['reward_std']:.3f}), mean |advantage| "
        f"{report['mean_abs_advantage']:.3f}, completions of {report['completion_tokens']['mean']} tokens on average."
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("A training step", f"{report['seconds_per_step']:.1f} s")
    c2.metric(
        "The whole run",
        f"about {report['minutes_total']:.0f} min"
        if report["minutes_total"] >= 2
        else f"about {report['minutes_total'] * 60:.0f} s",
        help="Its start, the evals, the steps and the saves, at the starting model's completion lengths (a "
        "run whose completions shorten goes faster), timed on this machine as busy as it was during the check "
        "(a browser or another run beside it slows every step).",
    )
    c3.metric("Peak memory", f"{report['peak_memory_mb']:,.0f} MB", help=report["peak_memory_of"])
    for f in report["findings"]:
        {"problem": st.error, "warning": st.warning}.get(f["severity"], st.info)(
            f"**{f['code']}**: {in_form_words(f['message'])}  \nFix: {in_form_words(f['fix'])}"
        )
    for kind, label in (("best_of_signal", "From a group with a signal"), ("no_signal", "From a group without one")):
        example = report["examples"].get(kind)
        if example:
            with st.expander(f"{label}: reward {example['reward']:g}, its group {example['group_rewards']}"):
                st.text(example["question"])
                show_completion(example["completion"])


def field(col, config_key: str, widget: str, /, *args, **kwargs):
    """A form widget in column `col`, with the problem of its `config_key` (if any) right under it, in
    the form's words, the key in small print."""
    value = getattr(col, widget)(*args, **kwargs)
    if config_key in errors:
        label = FIELDS.get(config_key, config_key.removeprefix("grpo."))
        col.error(plain(in_form_words(errors[config_key].replace(f"config key '{config_key}'", f"'{label}'"))))
        if " " not in config_key:  # the run name is no config key
            col.caption(f"config key: {config_key}")
    return value


with st.form("launch"):
    name = field(
        st,
        "run name",
        "text_input",
        "Run name",
        key=k + "name",
        placeholder="from the settings: grpo_<model>_K<K>_steps<steps>_<time>",
        help="A folder under the runs folder; letters, digits, '.', '_' and '-'. Left empty, it is "
        "named from the settings launched (model, K, steps) and the time.",
    )
    c1, c2, c3 = st.columns(3)
    model = field(
        c1,
        "model_name",
        "text_input",
        "Model (Hub id, local folder, or builtin:tiny)",
        base.model_name,
        key=k + "model",
    )
    # No bounds on the numbers: core.config checks them and says what is wrong under the form
    kgen = field(
        c2, "num_generations", "number_input", "K: completions per prompt", value=base.num_generations, key=k + "K"
    )
    tokens = field(c3, "max_new_tokens", "number_input", "Max new tokens", value=base.max_new_tokens, key=k + "tokens")
    steps = field(
        c1, "train.num_train_steps", "number_input", "Training steps", value=base.train.num_train_steps, key=k + "steps"
    )
    batch = field(
        c2,
        "train.per_device_train_batch_size",
        "number_input",
        "Per-device batch",
        value=base.train.per_device_train_batch_size,
        key=k + "batch",
    )
    accum = field(
        c3,
        "train.gradient_accumulation_steps",
        "number_input",
        "Gradient accumulation",
        value=base.train.gradient_accumulation_steps,
        key=k + "accum",
    )
    lr = field(
        c1,
        "train.learning_rate",
        "number_input",
        "Learning rate",
        value=base.train.learning_rate,
        format="%.2e",
        step=1e-6,
        key=k + "lr",
    )
    n_train = field(
        c2, "dataset.n_train", "number_input", "Training questions", value=base.dataset.n_train, key=k + "ntrain"
    )
    n_eval = field(c3, "dataset.n_eval", "number_input", "Eval questions", value=base.dataset.n_eval, key=k + "neval")
    seed = field(c1, "train.seed", "number_input", "Seed", value=base.train.seed, key=k + "seed")
    source_now = "path" if base.dataset.path else base.dataset.name
    source = field(
        c2,
        "dataset.name",
        "selectbox",
        "Data",
        list(SOURCES),
        index=list(SOURCES.values()).index(source_now),
        key=k + "source",
    )
    path = field(
        c3,
        "dataset.path",
        "text_input",
        "Local data path (for 'Local file or folder')",
        base.dataset.path or "",
        key=k + "path",
    )
    tracked = trackers(base)
    offered = list(dict.fromkeys(installed_trackers(FORM_TRACKERS) + tracked))  # and any the base already has
    chosen = field(
        c1,
        "runtime.report_to",
        "multiselect",
        "Trackers",
        offered,
        tracked,
        key=k + "trackers",
        help="Where the metrics and the eval before/after also go (the trackers installed here): "
        "TensorBoard writes into the run folder, Trackio into its local database, W&B to its project.",
    )
    do_eval = c2.toggle("Eval before and after", base.eval.enabled, key=k + "eval")
    level = field(
        c3,
        "dataset.level",
        "selectbox",
        "Synthetic difficulty",
        list(LEVELS),
        index=base.dataset.level - 1,
        key=k + "level",
        format_func=lambda n: f"{n}: {LEVELS[n]}",
    )
    procs = field(
        c1,
        "launch.num_processes",
        "number_input",
        "Processes (GPUs)",
        value=base.launch.num_processes,
        key=k + "procs",
        help="More than 1 starts the workers with torchrun (or accelerate launch, given an "
        "accelerate config); a step's completions (batch × accumulation × processes) must be whole groups of K.",
    )
    engines = list(dict.fromkeys([None, *ACCELERATE_CONFIGS, base.launch.accelerate_config]))  # the base's own too
    engine = field(
        c2,
        "launch.accelerate_config",
        "selectbox",
        "Accelerate config",
        engines,
        index=engines.index(base.launch.accelerate_config),
        format_func=lambda e: e or "none (torchrun, for more than 1 process)",
        key=k + "engine",
        help="DeepSpeed or FSDP through accelerate launch (configs/accelerate/).",
    )
    eval_backend = field(
        c3,
        "eval.backend",
        "selectbox",
        "Eval backend",
        ["hf", "vllm"],
        index=["hf", "vllm"].index(base.eval.backend),
        key=k + "evalbackend",
        disabled=not cuda,
        help="vllm: CUDA only, pip install -r requirements-vllm.txt."
        if cuda
        else "vllm needs an NVIDIA GPU and this machine has none: evals use transformers (hf).",
    )
    stop = field(
        c1,
        "stop_at_final",
        "toggle",
        "End at the Final line",
        base.stop_at_final,
        key=k + "stop",
        help="Once a completion has written `Final: <number>` and a newline, it ends there "
        "(sampling and eval; not with vLLM).",
    )
    with st.expander("LoRA: train adapters, not the whole model (PEFT)", expanded=base.peft.r > 0):
        l1, l2, l3 = st.columns(3)
        lora_r = field(
            l1,
            "peft.r",
            "number_input",
            "LoRA rank r (0: full fine-tuning)",
            value=base.peft.r,
            key=k + "lora_r",
            help="More than 0: the model's own weights stay frozen and adapters of "
            "this rank train (a few % of the weights: 3.5% for SmolLM2 at r=16); a higher learning "
            "rate suits them (the LoRA preset's: 2e-4).",
        )
        lora_alpha = field(
            l2,
            "peft.lora_alpha",
            "number_input",
            "lora_alpha",
            value=base.peft.lora_alpha,
            key=k + "lora_alpha",
            help="The adapters' update is scaled by lora_alpha / r.",
        )
        lora_dropout = field(
            l3,
            "peft.lora_dropout",
            "number_input",
            "lora_dropout",
            value=base.peft.lora_dropout,
            key=k + "lora_dropout",
        )
        lora_targets = field(
            l1,
            "peft.target_modules",
            "text_input",
            "target_modules",
            format_value(base.peft.target_modules),
            key=k + "lora_targets",
            help="all-linear, or a list of layer names such as [q_proj, v_proj].",
        )
        lora_bias = field(
            l2,
            "peft.bias",
            "selectbox",
            "bias",
            LORA_BIASES,
            index=LORA_BIASES.index(base.peft.bias),
            key=k + "lora_bias",
        )
    advanced = {}  # GRPOConfig field -> the form's value (text from text boxes, else the value itself)
    with st.expander("Advanced: the other GRPOConfig options a form can set (TRL's help text on each)"):
        for tab, group_fields in zip(st.tabs(list(groups)), groups.values()):
            cols = tab.columns(3)
            for i, f in enumerate(group_fields):
                value, help_text, key = setting(base, f"grpo.{f.name}"), f.metadata.get("help"), k + f.name
                options, off = choices(f"grpo.{f.name}"), "vllm" in f.name and not cuda
                if off:  # shown, so that a newcomer sees it exists, but not accepted here
                    help_text = f"Needs an NVIDIA GPU (vLLM runs on CUDA only); this machine has none. {help_text}"
                col, grpo_key = cols[i % 3], f"grpo.{f.name}"
                if is_toggle(f.name, value):
                    advanced[f.name] = field(
                        col, grpo_key, "toggle", f.name, value, help=help_text, key=key, disabled=off
                    )
                elif options:  # TRL's own choices
                    options = options if value in options else [value, *options]
                    advanced[f.name] = field(
                        col,
                        grpo_key,
                        "selectbox",
                        f.name,
                        options,
                        index=options.index(value),
                        help=help_text,
                        key=key,
                        disabled=off,
                    )
                else:
                    advanced[f.name] = field(
                        col, grpo_key, "text_input", f.name, format_value(value), help=help_text, key=key, disabled=off
                    )
    b1, b2, b3, b4 = st.columns([1, 1, 2, 3])
    check = b1.form_submit_button("Check")
    go = b2.form_submit_button("Launch", type="primary")
    fly = b3.form_submit_button(
        "Check before launch",
        help="Samples training questions × K from the starting model "
        "with these settings and scores them, times a training step, and says whether the "
        "run will get a learning signal and how long it will take (python -m core.preflight).",
    )
    preset_name = b4.text_input("Preset name", placeholder="my_preset", label_visibility="collapsed", key=k + "pname")
    save = b4.form_submit_button("Save as preset")

wanted = {
    "model_name": model,
    "num_generations": int(kgen),
    "max_new_tokens": int(tokens),
    "train.num_train_steps": int(steps),
    "train.per_device_train_batch_size": int(batch),
    "train.gradient_accumulation_steps": int(accum),
    "train.learning_rate": float(lr),
    "dataset.n_train": int(n_train),
    "dataset.n_eval": int(n_eval),
    "train.seed": int(seed),
    "dataset.name": "gsm8k" if SOURCES[source] == "path" else SOURCES[source],
    "dataset.path": path.strip() or None if SOURCES[source] == "path" else None,
    "dataset.level": level,
    "runtime.use_wandb": "wandb" in chosen,
    "runtime.report_to": [t for t in chosen if t != "wandb"],
    "eval.enabled": do_eval,
    "launch.num_processes": int(procs),
    "launch.accelerate_config": engine,
    "eval.backend": eval_backend,
    "stop_at_final": stop,
    "peft.r": int(lora_r),
    "peft.lora_alpha": int(lora_alpha),
    "peft.lora_dropout": float(lora_dropout),
    "peft.bias": lora_bias,
}
# A button pressed, or the one pressed before the rerun that cleared the problems shown under the fields
pressed = "go" if go else "save" if save else "preflight" if fly else "check" if check else None
pending = st.session_state.pop(k + "pending", None)  # (action, settings) left by the rerun that redrew the form
action = pressed or (pending[0] if pending else None)
if action:
    texts = {
        f"grpo.{field_name}": value
        for field_name, value in advanced.items()  # text boxes: typed by core
        if isinstance(value, str) and choices(f"grpo.{field_name}") is None
    }
    form = check_form(
        base_path,
        {
            **wanted,
            "peft.target_modules": lora_targets,
            **{f"grpo.{field_name}": v for field_name, v in advanced.items()},
        },
        {"peft.target_modules": lora_targets, **texts},
        name,
        runs_root(),
    )
    sets, found, run_name = form.sets, form.problems, form.name
    if not pressed and sets != pending[1]:  # the form changed since that click: act on a new click only
        st.stop()
    if found != errors:  # draw the form again, each problem under its field
        st.session_state[k + "errors"], st.session_state[k + "pending"] = found, (action, sets)
        st.rerun()
    if found:
        named = [
            FIELDS[key] if key in FIELDS else f"{key.removeprefix('grpo.')} (Advanced)"  # in the form's order
            for key in sorted(found, key=lambda key: list(FIELDS).index(key) if key in FIELDS else len(FIELDS))
            if key in FIELDS or key.startswith("grpo.")
        ]
        st.error(
            f"{len(found)} setting{'s' if len(found) != 1 else ''} to fix before this run can start"
            + (f": {', '.join(named)}, each explained under its field." if named else ".")
        )
        for key, message in found.items():  # from the base's own settings: not a field of this form
            if key not in FIELDS and not key.startswith("grpo."):
                st.error(plain(message))
        st.stop()
    cfg = load_config(base_path, sets=sets)
    run_name = run_name or f"{cfg.run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    args = ["--config", base_label, *[a for s in sets for a in ("--set", s)]]
    machines = cfg.launch.num_machines
    if machines > 1:  # started on each machine, not from here
        st.caption(
            f"This run spans {machines} machines ({cfg.launch.num_processes} workers each, "
            f"{machines * cfg.launch.num_processes} in all): start one command on each, with the run folder "
            "on storage they all see (or use scripts/slurm_train.sh)"
        )
        for command in machine_commands(cfg, args):
            st.code(command, language="bash")
    else:
        renamed = name.strip() and run_name != name.strip()  # the folder's name: letters, digits, '.', '_', '-'
        st.caption(
            f"Run name: {plain(run_name)}"
            + (f" (typed: {plain(name.strip())}; a folder name keeps letters, digits, . _ and -)" if renamed else "")
            + " · equivalent command line"
        )
        st.code(shlex.join(["python", "-m", "core.train", *args]), language="bash")
    if action == "save":
        try:
            target = save_preset(cfg, REPO / "configs", preset_name, based_on=base_label)
        except ConfigError as e:
            st.error(plain(str(e)))
            st.stop()
        st.success(f"Saved configs/{target.name}")
    elif action == "go" and machines > 1:
        st.warning(
            f"A run on {machines} machines is not launched from here: run the commands above, one on "
            "each machine (machine 0 first)."
        )
    elif action == "go":
        try:
            launch(cfg.to_dict(), runs_root(), run_name, repo=REPO)
        except ValueError as e:
            st.error(plain(str(e)))
            st.stop()
        st.session_state["selected_run"] = run_name
        st.switch_page("app_pages/runs.py", query_params={"run": run_name})
    elif action == "preflight":
        with st.status("Checking before launch: loading the model…", expanded=False) as status:
            report, why = in_subprocess(
                cfg, progress=lambda line: status.update(label=f"Checking before launch: {line}")
            )
            status.update(
                label="Checked before launch" if report else "The check could not run",
                state="complete" if report else "error",
            )
        st.session_state[k + "preflight"] = (report, why)
    else:
        st.success("The settings are valid.")
    if action != "preflight":
        st.session_state.pop(k + "preflight", None)  # a check of other settings, or none
checked = st.session_state.get(k + "preflight")
if checked:
    preflight_view(*checked)
