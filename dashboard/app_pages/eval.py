"""Eval: greedy accuracy (strict and lenient) and the well-formed share before vs after training, and the
questions that flipped."""

import pandas as pd
import streamlit as st

from dashboard.caches import store_for
from dashboard.widgets import ROW_CLICK, clicked_row, fmt_pct, live_every, pick_run, show_completion

st.title("Eval")
run = pick_run()
if run is None:
    st.stop()


@st.fragment(run_every=live_every(run))
def view():
    store = store_for(run["name"])
    summary = store.eval_summary().set_index("phase")
    if summary.empty:
        st.info(
            "No eval results yet: the run evaluates before training starts and again at the end "
            "(unless `eval.enabled` is false)."
        )
        return
    others = summary.drop(index=["before", "after"], errors="ignore")
    if not others.empty:
        st.caption("Other evaluations of this run (`python -m core.evaluate RUN --phase NAME`)")
        st.dataframe(others, width="stretch")
    before = summary.loc["before"] if "before" in summary.index else None
    after = summary.loc["after"] if "after" in summary.index else None
    shown = after if after is not None else before
    columns = st.columns(5)
    columns[0].metric("Questions", int(shown["n"]))
    figures = {
        "accuracy": ("Strict accuracy", fmt_pct),
        "lenient_accuracy": ("Lenient accuracy", fmt_pct),
        "format_rate": ("Well-formed", fmt_pct),
        "mean_completion_tokens": ("Mean new tokens", lambda v: f"{v:.1f}"),
    }
    for column, (name, (label, fmt)) in zip(columns[1:], figures.items()):
        if after is None:
            column.metric(f"{label}, before", fmt(before[name]))
        else:
            change = None if before is None or before[name] != before[name] else after[name] - before[name]
            delta = None if change is None else f"{100 * change:+.1f} points" if fmt is fmt_pct else f"{change:+.1f}"
            moved = change is not None and round(change * (100 if fmt is fmt_pct else 1), 1) != 0  # not "+0.0"
            column.metric(
                f"{label}, after",
                fmt(after[name]),
                delta=delta,
                delta_color="normal" if moved and fmt is fmt_pct else "off",  # no change, or tokens: grey
                delta_arrow="auto" if moved else "off",  # +0.0 points: no arrow either
                help=None if before is None else f"before training: {fmt(before[name])}",
            )
    st.caption(
        "Strict accuracy is what the reward pays for: a well-formed Final line with the right number. "
        "Lenient accuracy reads the last number anywhere; well-formed is the share of answers ending in a "
        "Final line. The gap between strict and lenient is what learning the answer format is worth."
    )
    if after is None:
        st.caption("The after-training eval has not run yet.")
        return
    flips = store.eval_flips()
    st.subheader(f"Questions that flipped ({len(flips)})")
    if flips.empty:
        st.caption("No question changed from wrong to right or back.")
        return
    counts = flips["flip"].value_counts()
    kind = st.segmented_control(
        "Flipped",
        ["all", "wrong → right", "right → wrong"],
        default="all",
        key="flip_kind",
        format_func=lambda k: f"{k} ({len(flips) if k == 'all' else counts.get(k, 0)})",
    )
    part = (flips if kind in (None, "all") else flips[flips["flip"] == kind]).reset_index(drop=True)
    table = pd.DataFrame(
        {
            "flip": part["flip"],
            "question": part["question"],
            "ground truth": part["ground_truth"],
            "answer before → after": [
                f"{b or 'none'} → {a or 'none'}" for b, a in zip(part["before_prediction"], part["after_prediction"])
            ],
            "tokens before → after": [f"{b} → {a}" for b, a in zip(part["before_tokens"], part["after_tokens"])],
        }
    )
    event = st.dataframe(
        table, hide_index=True, on_select="rerun", selection_mode=ROW_CLICK, key=f"flips_{kind}", width="stretch"
    )
    clicked = clicked_row(event)
    asked = part.index[part["prompt_id"] == st.query_params.get("question")]  # opened from a doctor's example
    if clicked is None and len(asked):
        clicked = asked[0]
    if clicked is None:
        st.caption("Click a row to read its completions before and after training, side by side.")
        return
    row = part.iloc[clicked]
    st.markdown(f"**{row['flip']}** · question `{row['prompt_id']}` · ground truth `{row['ground_truth']}`")
    st.text(row["question"])
    left, right = st.columns(2)
    with left:
        show_completion(row["before_completion"], "Before training")
    with right:
        show_completion(row["after_completion"], "After training")


view()
