"""Eval: greedy accuracy (strict and lenient) and the well-formed share before vs after training, and the
questions that flipped."""

import streamlit as st

from dashboard.caches import store_for
from dashboard.widgets import fmt_pct, live_every, pick_run, show_completion

st.title("Eval")
run = pick_run()
if run is None:
    st.stop()


@st.fragment(run_every=live_every(run))
def view():
    store = store_for(run["name"])
    summary = store.eval_summary().set_index("phase")
    if summary.empty:
        st.info("No eval results yet: the run evaluates before training starts and again at the end "
                "(unless `eval.enabled` is false).")
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
    figures = {"accuracy": ("Strict accuracy", fmt_pct), "lenient_accuracy": ("Lenient accuracy", fmt_pct),
               "format_rate": ("Well-formed", fmt_pct),
               "mean_completion_tokens": ("Mean new tokens", lambda v: f"{v:.1f}")}
    for column, (name, (label, fmt)) in zip(columns[1:], figures.items()):
        if after is None:
            column.metric(f"{label}, before", fmt(before[name]))
        else:
            change = None if before is None or before[name] != before[name] else after[name] - before[name]
            column.metric(f"{label}, after", fmt(after[name]), delta=None if change is None else (
                f"{100 * change:+.1f} points" if fmt is fmt_pct else f"{change:+.1f}"),
                help=None if before is None else f"before training: {fmt(before[name])}")
    st.caption("Strict accuracy is what the reward pays for: a well-formed Final line with the right number. "
               "Lenient accuracy reads the last number anywhere; well-formed is the share of answers ending in a "
               "Final line. The gap between strict and lenient is what learning the answer format is worth.")
    if after is None:
        st.caption("The after-training eval has not run yet.")
        return
    flips = store.eval_flips()
    st.subheader(f"Questions that flipped ({len(flips)})")
    if flips.empty:
        st.caption("No question changed from wrong to right or back.")
    for kind in ("wrong → right", "right → wrong"):
        part = flips[flips["flip"] == kind]
        if part.empty:
            continue
        st.markdown(f"**{kind}** ({len(part)})")
        for _, row in part.iterrows():
            with st.expander(f"{row['prompt_id']} · ground truth {row['ground_truth']} · "
                             f"{row['before_prediction'] or 'no answer'} → {row['after_prediction'] or 'no answer'}"):
                st.text(row["question"])
                left, right = st.columns(2)
                with left:
                    show_completion(row["before_completion"], "Before training")
                with right:
                    show_completion(row["after_completion"], "After training")


view()
