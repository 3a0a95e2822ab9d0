"""Eval: greedy accuracy before vs after training, and the questions that flipped."""

import streamlit as st

from dashboard.common import fmt_pct, live_every, pick_run, show_completion, store_for

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
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Questions", int((after if after is not None else before)["n"]))
    if before is not None:
        c2.metric("Accuracy before", fmt_pct(before["accuracy"]))
        c4.metric("Mean new tokens before", f"{before['mean_completion_tokens']:.1f}")
    if after is None:
        st.caption("The after-training eval has not run yet.")
        return
    c3.metric("Accuracy after", fmt_pct(after["accuracy"]),
              delta=None if before is None else f"{100 * (after['accuracy'] - before['accuracy']):+.1f} points")
    c5.metric("Mean new tokens after", f"{after['mean_completion_tokens']:.1f}")
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
