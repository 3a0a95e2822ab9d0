"""simple_grpo dashboard: launch GRPO runs, watch them live, read every rollout.

    streamlit run dashboard/app.py        # served on http://127.0.0.1:8501 (.streamlit/config.toml)

Runs live in RUNS_DIR (default ./runs). Pages draw and call `core`; they hold no logic of their own.
"""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `core` lives beside `dashboard`

from dashboard.security import allowed_host  # noqa: E402

# The tab icon is a file served by this server: a Material icon there would be fetched from fonts.gstatic.com.
st.set_page_config(page_title="simple_grpo", page_icon=Path(__file__).parent / "icon.png", layout="wide")
if not allowed_host(st.context.headers.get("Host", "")):
    # A page on another site that made its name resolve to this machine (DNS rebinding) must not
    # drive the Launch form: this dashboard answers only to the names of this machine.
    st.error(
        "This dashboard answers only to localhost / 127.0.0.1. To reach it under another name, add that "
        "name to SIMPLE_GRPO_ALLOWED_HOSTS (comma-separated) before starting it."
    )
    st.stop()

navigation = st.navigation(
    {
        "": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Train": [
            st.Page("app_pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
            st.Page("app_pages/runs.py", title="Runs", icon=":material/monitoring:"),
        ],
        "Inspect": [
            st.Page("app_pages/rollouts.py", title="Rollouts", icon=":material/search:"),
            st.Page("app_pages/rewards.py", title="Rewards", icon=":material/target:"),
            st.Page("app_pages/prompts.py", title="Prompts", icon=":material/extension:"),
            st.Page("app_pages/eval.py", title="Eval", icon=":material/fact_check:"),
            st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
        ],
    }
)
navigation.run()
