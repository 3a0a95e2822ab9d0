"""Rewards, from the rollouts themselves: mean ± std per step, a histogram over a step window,
categories per step, lengths per category, format rate."""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard.caches import store_for
from dashboard.widgets import CATEGORY_COLORS, CHART_SECONDS, live_every, pick_run, step_window

st.title("Rewards")
run = pick_run()
if run is None:
    st.stop()


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def charts():
    store = store_for(run["name"])
    agg = store.step_aggregates()
    if agg.empty:
        st.info("This run has no rollouts yet.")
        return
    lo, hi = int(agg["step"].min()), int(agg["step"].max())
    step_min, step_max = step_window("Step window", lo, hi, key="window")
    first, last = step_min or lo, step_max or hi
    c1, c2 = st.columns(2)
    fig = go.Figure([
        # ± std, never past the rewards actually seen at that step (a reward in [0, 1] has no band below 0)
        go.Scatter(x=agg["step"], y=(agg["mean_reward"] + agg["std_reward"]).clip(upper=agg["max_reward"]),
                   mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip"),
        go.Scatter(x=agg["step"], y=(agg["mean_reward"] - agg["std_reward"]).clip(lower=agg["min_reward"]),
                   mode="lines", fill="tonexty", line=dict(width=0), name="± std", hoverinfo="skip"),
        go.Scatter(x=agg["step"], y=agg["mean_reward"], mode="lines+markers", name="mean reward")])
    fig.update_layout(title="Mean reward ± std (all sampled completions)", xaxis_title="step")
    c1.plotly_chart(fig, key="reward")
    if run.get("read_only"):  # a plain TRL run: rewards only
        c2.caption("A TRL run records no parsed answer or correctness: the categories (malformed, wrong, correct), "
                   "the format rate and the accuracy need them. The histogram shows its rewards.")
        hist = store.reward_histogram(step_min, step_max)
        c2.plotly_chart(px.bar(hist, x="reward", y="n", title=f"Reward histogram, steps {first}–{last}",
                               labels={"n": "completions"}), key="hist")
        return
    long = store.categories_per_step().melt(id_vars="step", var_name="category", value_name="completions")
    c2.plotly_chart(px.bar(long, x="step", y="completions", color="category", title="Reward categories per step",
                           color_discrete_map=CATEGORY_COLORS, category_orders={"category": list(CATEGORY_COLORS)}),
                    key="cats")
    hist = store.reward_histogram(step_min, step_max)
    fig = px.bar(hist, x="reward", y="n", title=f"Reward histogram, steps {first}–{last}",
                 labels={"n": "completions"})
    fig.update_xaxes(type="category")
    c1.plotly_chart(fig, key="hist")
    width = store.length_bin(step_min, step_max)  # bins from the lengths: short completions get a bar a token
    lengths = store.length_by_category(bin=width, step_min=step_min, step_max=step_max)
    fig = px.bar(lengths, x="tokens", y="n", color="category", barmode="group",  # side by side: none hides another
                 color_discrete_map=CATEGORY_COLORS, category_orders={"category": list(CATEGORY_COLORS)},
                 title="Completion length by category (tokens" + (f", bins of {width})" if width > 1 else ")"),
                 labels={"n": "completions"})
    c2.plotly_chart(fig, key="lengths")
    fig = px.line(agg, x="step", y=["format_rate", "accuracy"], markers=True,
                  title="Format rate and accuracy over time", labels={"value": "share of completions"})
    fig.update_yaxes(range=[-0.02, 1.02])
    c1.plotly_chart(fig, key="format")


charts()
