"""Compare: several runs' reward and accuracy curves overlaid, their evals, and their config diff."""

import pandas as pd
import streamlit as st

from core.runs import settings_diff
from core.store import compare_step_aggregates
from dashboard.caches import all_runs, folder_of, store_for
from dashboard.widgets import curve_grid, fmt_pct, smoothing_slider, wanted_run

st.title("Compare runs")
runs = all_runs()
if len(runs) < 2:
    st.info("Compare needs at least two runs.")
    st.stop()
all_names = [r["name"] for r in runs]  # newest first
current = wanted_run()  # the run picked on the other pages, beside the newest other run
default = ([current] if current in all_names else []) + [n for n in all_names if n != current]
names = st.multiselect("Runs", all_names, default=default[:2], key="compare")
if len(names) < 2:
    st.caption("Pick two or more runs.")
    st.stop()

agg = compare_step_aggregates({name: store_for(name) for name in names})
info = {r["name"]: r for r in runs}
c_smooth, c_x = st.columns([2, 2])
with c_smooth:
    smoothing = smoothing_slider()  # as on Runs, and the same choice
x = c_x.radio(
    "x axis",
    ["step", "fraction"],
    format_func=lambda x: {"step": "step", "fraction": "fraction of training"}[x],
    horizontal=True,
    key="compare_x",
    help="Fraction of training: each run's step over its own training steps, so that a short run and a long "
    "one lie over each other instead of the short one squeezed against the left edge.",
)
if len(agg):  # a curve per run, a hue of its own for each
    steps_of = {n: info[n]["num_train_steps"] or agg.loc[agg["run"] == n, "step"].max() for n in names}
    at = agg["step"] if x == "step" else agg["step"] / agg["run"].map(steps_of)
    charts = [("mean_reward", "Mean reward per step"), ("accuracy", "Accuracy per step (sampled)")]
    curves = pd.concat(
        [pd.DataFrame({"title": title, "label": agg["run"], "x": at, "value": agg[value]}) for value, title in charts],
        ignore_index=True,
    ).dropna(subset=["value"])
    chart = curve_grid(curves, [title for _, title in charts], smoothing, x, width=400, height=300)
    if chart is not None:
        st.altair_chart(chart, key="curves")

st.subheader("Eval")
st.dataframe(
    pd.DataFrame(
        [
            {
                "run": n,
                "state": info[n]["state"],
                "before": fmt_pct(info[n]["eval_before"]),
                "after": fmt_pct(info[n]["eval_after"]),
            }
            for n in names
        ]
    ),
    hide_index=True,
)


st.subheader("Settings that differ")
unknown = [n for n in names if info[n].get("read_only")]
if unknown:
    st.caption(
        f"Left out: {', '.join(unknown)}, TRL run(s) whose settings are not in a file this dashboard reads "
        "(training_args.bin is a pickle, which it does not load)."
    )
known = [n for n in names if n not in unknown]
diff = settings_diff({n: folder_of(n) for n in known}) if len(known) > 1 else None
if diff:
    st.dataframe(pd.DataFrame(diff), hide_index=True)
elif diff is not None:
    st.caption("These runs have the same settings (apart from their folders).")
