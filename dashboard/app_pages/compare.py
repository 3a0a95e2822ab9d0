"""Compare: several runs' reward and accuracy curves overlaid, their evals, and their config diff."""

import itertools

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.runs import settings_diff
from core.store import compare_step_aggregates
from dashboard.caches import all_runs, folder_of, store_for
from dashboard.widgets import COLORS, add_curve, curve_layout, fmt_pct, smoothing_slider

st.title("Compare runs")
runs = all_runs()
if len(runs) < 2:
    st.info("Compare needs at least two runs.")
    st.stop()
names = st.multiselect("Runs", [r["name"] for r in runs], default=[r["name"] for r in runs[:2]], key="compare")
if len(names) < 2:
    st.caption("Pick two or more runs.")
    st.stop()

agg = compare_step_aggregates({name: store_for(name) for name in names})
smoothing = smoothing_slider()  # as on Runs, and the same choice
c1, c2 = st.columns(2)
if len(agg):
    for column, (value, title) in zip((c1, c2), [("mean_reward", "Mean reward per step"),
                                                ("accuracy", "Accuracy per step (sampled)")]):
        fig = go.Figure()
        for name, color in zip(names, itertools.cycle(COLORS)):  # a hue of its own for each run
            part = agg[agg["run"] == name]
            if len(part):
                add_curve(fig, part["step"].tolist(), part[value].tolist(), name, color, smoothing)
        if value == "accuracy":
            fig.update_yaxes(range=[-0.02, 1.02])
        column.plotly_chart(curve_layout(fig, title, height=380), key=value)

info = {r["name"]: r for r in runs}
st.subheader("Eval")
st.dataframe(pd.DataFrame([{"run": n, "state": info[n]["state"], "before": fmt_pct(info[n]["eval_before"]),
                            "after": fmt_pct(info[n]["eval_after"])} for n in names]), hide_index=True)


st.subheader("Settings that differ")
unknown = [n for n in names if info[n].get("read_only")]
if unknown:
    st.caption(f"Left out: {', '.join(unknown)}, TRL run(s) whose settings are not in a file this dashboard reads "
               "(training_args.bin is a pickle, which it does not load).")
known = [n for n in names if n not in unknown]
diff = settings_diff({n: folder_of(n) for n in known}) if len(known) > 1 else None
if diff:
    st.dataframe(pd.DataFrame(diff), hide_index=True)
elif diff is not None:
    st.caption("These runs have the same settings (apart from their folders).")
