"""Home: what this tool does, the one-click offline demo, and the latest runs."""

import time

import pandas as pd
import streamlit as st

from core import REPO
from core.config import load_config
from core.errors import ConfigError
from core.gguf_model import smollm2_file
from core.runs import launch, list_runs
from dashboard.caches import runs_root
from dashboard.widgets import fmt_pct

st.title("simple_grpo")
st.markdown(
    "Teach a language model to solve grade-school math with **GRPO** (TRL's `GRPOTrainer`). "
    "For each question the model samples *K* answers; each answer gets a reward — **1.0** when it ends in "
    "`Final: <number>` with the right number, **0.1** when the format is right but the number is wrong, "
    "**0.0** otherwise — and the model is pushed towards the answers that beat their group's average.\n\n"
    "Here you can **launch** runs from a form, **watch** rewards and accuracy move while they train, and "
    "**read** every completion the model wrote: per step, per prompt, per sample."
)

runs = list_runs(runs_root())


def launch_preset(preset: str, prefix: str) -> None:
    name = f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}"
    # said at once: the first launch of a server reads TRL's settings for the first time (several seconds)
    with st.spinner(f"Starting run {name}: reading its settings, then the Runs page follows it…", show_time=True):
        config = load_config(REPO / "configs" / preset).to_dict()
        launch(config, runs_root(), name, repo=REPO)
    st.session_state["selected_run"] = name
    st.switch_page("app_pages/runs.py", query_params={"run": name})


left, right = st.columns([2, 3])
with left:
    st.subheader("Watch a model learn in minutes")
    st.markdown(
        "The demo runs offline on any CPU: a tiny built-in model that knows the answer format but "
        "gets only a third to two fifths of single-digit additions right. In three to six minutes of "
        "GRPO (on a 2-core CPU) its rewards rise and its eval accuracy on held-out questions climbs: "
        "by 10 to 45 points in eleven runs of five seeds on two machines, 25 on average. Each run "
        "learns a different amount; none collapsed."
    )
    if st.button("Launch the CPU demo", icon=":material/rocket_launch:", type="primary"):
        launch_preset("demo_cpu.yaml", "demo")
    st.subheader("A real language model, on this CPU")
    try:
        smollm2_file()
        missing = None
    except ConfigError as e:  # what to install
        missing = str(e)
    st.markdown(
        "SmolLM2-135M-Instruct writes fluent text and wrong arithmetic, and rarely ends with a "
        "`Final:` line. About **15 minutes** of GRPO on a 2-core CPU (40 steps of 8 samples, each ended at "
        "its Final line) teach it the format within about ten steps: watch the well-formed share and "
        "the reward rise, and read what it writes."
    )
    if st.button(
        "Launch SmolLM2 on the CPU", icon=":material/rocket_launch:", disabled=missing is not None, help=missing
    ):
        launch_preset("smollm2_cpu.yaml", "smollm2")
with right:
    st.subheader("Latest runs" if runs else "No runs yet")
    if runs:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "run": r["name"],
                        "state": r["state"],
                        "step": f"{r['step']}/{r['num_train_steps']}",
                        "eval before → after": f"{fmt_pct(r['eval_before'])} → {fmt_pct(r['eval_after'])}",
                    }
                    for r in runs[:8]
                ]
            ),
            hide_index=True,
        )
    else:
        st.markdown(
            "Launch the demo, or start a run from the terminal: "
            "`python -m core.train --config configs/demo_cpu.yaml` — it shows up here too."
        )
