"""Rewards: histogram over a step window, categories per step, lengths per category, format rate."""

import plotly.express as px
import streamlit as st

from dashboard.common import CATEGORY_COLORS, categories_chart, live_every, pick_run, store_for

st.title("Rewards")
run = pick_run()
if run is None:
    st.stop()


@st.fragment(run_every=live_every(run))
def charts():
    store = store_for(run["name"])
    agg = store.step_aggregates()
    if agg.empty:
        st.info("This run has no rollouts yet.")
        return
    lo, hi = int(agg["step"].min()), int(agg["step"].max())
    window = st.slider("Step window", lo, hi, (lo, hi), key="window") if hi > lo else (lo, hi)
    c1, c2 = st.columns(2)
    hist = store.reward_histogram(*window)
    fig = px.bar(hist, x="reward", y="n", title=f"Reward histogram, steps {window[0]}–{window[1]}",
                 labels={"n": "completions"})
    fig.update_xaxes(type="category")
    c1.plotly_chart(fig, key="hist")
    lengths = store.length_by_category(bin=8, step_min=window[0], step_max=window[1])
    fig = px.bar(lengths, x="tokens", y="n", color="category", barmode="overlay", opacity=0.7,
                 color_discrete_map=CATEGORY_COLORS, title="Completion length by category (tokens, bins of 8)",
                 labels={"n": "completions"})
    c2.plotly_chart(fig, key="lengths")
    c1.plotly_chart(categories_chart(store), key="cats")
    fig = px.line(agg, x="step", y=["format_rate", "accuracy"], markers=True,
                  title="Format rate and accuracy over time", labels={"value": "share of completions"})
    fig.update_yaxes(range=[-0.02, 1.02])
    c2.plotly_chart(fig, key="format")


charts()
