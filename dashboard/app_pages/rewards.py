"""Rewards, from the rollouts themselves: over the steps, the mean ± std, the categories and the format
rate (hovering a step marks it on each); then, over a step window, a histogram and the lengths per
category. Vega-Lite charts with fixed specs, so that a live refresh updates their data in place."""

import warnings

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.caches import store_for
from dashboard.widgets import (CATEGORY_COLORS, CHART_SECONDS, COLORS, hover_marks, hover_on, live_every, pick_run,
                               step_window)

st.title("Rewards")
run = pick_run()
if run is None:
    st.stop()

WIDTH, HEIGHT = 380, 220
CATEGORIES = list(CATEGORY_COLORS)
STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # whole steps
SHARES = {"format_rate": "format rate", "accuracy": "accuracy"}  # columns of step_aggregates, and their curves


def over_steps(steps: pd.DataFrame, graded: bool):
    """The charts over the steps, one Vega-Lite chart: the mean reward ± std, and (`graded`: a run of
    ours, whose rollouts are graded) the reward categories, and the format rate and accuracy."""
    hover = hover_on("step")
    step = alt.X("step:Q", title="step", scale=alt.Scale(nice=False, zero=False), axis=STEP_AXIS)
    mean = alt.Chart().encode(x=step, y=alt.Y("mean_reward:Q", title="reward"))
    panels = [alt.layer(
        mean.mark_area(opacity=0.2, color=COLORS[0]).encode(y="lower:Q", y2="upper:Q"),
        mean.mark_line(point=True, color=COLORS[0]),
        *hover_marks("step", mean.encode(color=alt.value(COLORS[0])), hover, [
            alt.Tooltip("step:Q"), alt.Tooltip("mean_reward:Q", title="mean reward", format=".3f"),
            alt.Tooltip("std_reward:Q", title="std", format=".3f"), alt.Tooltip("n:Q", title="completions")]),
    ).properties(title="Mean reward ± std (all sampled completions)", width=WIDTH, height=HEIGHT)]
    if not graded:
        return alt.concat(*panels, data=steps, columns=2)
    color = alt.Color("category:N", title=None, legend=alt.Legend(orient="bottom"),
                      scale=alt.Scale(domain=CATEGORIES, range=list(CATEGORY_COLORS.values())))
    bars = alt.Chart().transform_fold(CATEGORIES, as_=["category", "completions"]).transform_calculate(
        order=f"indexof({CATEGORIES}, datum.category)", left="datum.step - 0.45", right="datum.step + 0.45",
    ).transform_stack(stack="completions", groupby=["step"], sort=[alt.SortField("order")], as_=["bottom", "top"])
    totals = alt.Chart().transform_calculate(completions="datum.malformed + datum.wrong + datum.correct").encode(
        x=step, y="completions:Q")
    panels.append(alt.layer(  # a bar a step, as wide as the step
        bars.mark_bar().encode(x=alt.X("left:Q", title="step", scale=alt.Scale(nice=False, zero=False),
                                       axis=STEP_AXIS),
                               x2="right:Q", y=alt.Y("bottom:Q", title="completions"), y2="top:Q", color=color),
        *hover_marks("step", totals.encode(color=alt.value("gray")), hover, [
            alt.Tooltip("step:Q"), *[alt.Tooltip(f"{c}:Q") for c in CATEGORIES]]),
    ).properties(title="Reward categories per step", width=WIDTH, height=HEIGHT))
    shares = alt.Chart().transform_fold(list(SHARES), as_=["measure", "share"]).transform_calculate(
        measure="datum.measure == 'accuracy' ? 'accuracy' : 'format rate'").encode(
        x=step, y=alt.Y("share:Q", title="share of completions", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=list(SHARES.values()), range=COLORS[:2])))
    panels.append(alt.layer(
        shares.mark_line(point=True),
        *hover_marks("step", shares, hover, [alt.Tooltip("measure:N", title="curve"), alt.Tooltip("step:Q"),
                                             alt.Tooltip("share:Q", format=".3f")]),
    ).properties(title="Format rate and accuracy over time", width=WIDTH, height=HEIGHT))
    return alt.concat(*panels, data=steps, columns=2).resolve_scale(color="independent")


def in_window(histogram: pd.DataFrame, lengths: pd.DataFrame | None):
    """The charts of a step window, one Vega-Lite chart: the reward histogram, and (a run of ours) the
    completion lengths per category, side by side so that no category hides another."""
    panels = [alt.Chart(histogram).mark_bar(color=COLORS[0]).encode(
        x=alt.X("reward:O", title="reward", axis=alt.Axis(labelAngle=0)), y=alt.Y("n:Q", title="completions"),
        tooltip=[alt.Tooltip("reward:Q"), alt.Tooltip("n:Q", title="completions")],
    ).properties(title="Reward histogram", width=WIDTH, height=HEIGHT)]
    if lengths is not None:
        panels.append(alt.Chart(lengths).mark_bar().encode(
            x=alt.X("tokens:O", title="tokens (the bin's first)", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("category:N", scale=alt.Scale(domain=CATEGORIES)),
            y=alt.Y("n:Q", title="completions"),
            color=alt.Color("category:N", title=None, legend=alt.Legend(orient="bottom"),
                            scale=alt.Scale(domain=CATEGORIES, range=list(CATEGORY_COLORS.values()))),
            tooltip=["category:N", alt.Tooltip("tokens:Q", title="tokens from"), alt.Tooltip("n:Q", title="completions")],
        ).properties(title="Completion length by category", width=WIDTH, height=HEIGHT))
    return alt.hconcat(*panels).resolve_scale(color="independent")


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def charts():
    store = store_for(run["name"])
    agg = store.step_aggregates()
    if agg.empty:
        st.info("This run has no rollouts yet.")
        return
    graded = not run.get("read_only")  # a plain TRL run records rewards only
    steps = agg.assign(  # ± std, never past the rewards actually seen at that step (a reward in [0, 1] has no band below 0)
        upper=(agg["mean_reward"] + agg["std_reward"]).clip(upper=agg["max_reward"]),
        lower=(agg["mean_reward"] - agg["std_reward"]).clip(lower=agg["min_reward"]))
    if graded:
        steps = steps.merge(store.categories_per_step(), on="step")
    else:
        st.caption("A TRL run records no parsed answer or correctness: the categories (malformed, wrong, correct), "
                   "the format rate and the accuracy need them. The histogram shows its rewards.")
    with warnings.catch_warnings():  # Altair says it made the panels' hover selections one: as meant
        warnings.filterwarnings("ignore", "Automatically deduplicated selection parameter")
        st.altair_chart(over_steps(steps, graded), key="over_steps")

    lo, hi = int(agg["step"].min()), int(agg["step"].max())
    step_min, step_max = step_window("Step window", lo, hi, key="window")
    width = store.length_bin(step_min, step_max)  # bins from the lengths: short completions get a bar a token
    st.markdown(f"**Steps {step_min or lo}–{step_max or hi}**: the rewards" + (
        "" if not graded else ", and the completions' lengths in tokens" + (f" (bins of {width})" if width > 1 else "")))
    lengths = store.length_by_category(bin=width, step_min=step_min, step_max=step_max) if graded else None
    st.altair_chart(in_window(store.reward_histogram(step_min, step_max), lengths), key="in_window")


charts()
