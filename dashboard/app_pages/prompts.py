"""Prompts: per-prompt accuracy curves, a prompts × steps heatmap, leaderboards; click to read."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.caches import store_for
from dashboard.widgets import (
    CHART_SECONDS,
    COLORS,
    ROW_CLICK,
    clicked_row,
    hover_marks,
    hover_on,
    live_every,
    pick_run,
    step_bin,
)

BOARDS = {
    "most_improved": "Most improved",
    "regressed": "Regressed",
    "never_solved": "Never solved",
    "always_solved": "Always solved",
}

st.title("Prompts")
run = pick_run()
if run is None:
    st.stop()


def open_rollouts(prompt_id: str, step: int | None = None, bin: int = 1) -> None:
    """Rollouts on `prompt_id`; with `step`, at the steps of that point of its curve (`bin` of them from
    `step`): the table's window, and the prompt's first group there opened."""
    query = {"run": run["name"], "prompt_id": prompt_id}
    if step is not None:
        sampled = [s for s in store_for(run["name"]).prompt_steps(prompt_id) if step <= s < step + bin]
        query |= {"step": str(sampled[0] if sampled else step), "from": str(step), "to": str(step + bin - 1)}
    st.session_state.pop("focus", None)
    st.switch_page("app_pages/rollouts.py", query_params=query)


def accuracy_curves(curves: pd.DataFrame, title: str):
    """Each picked prompt's accuracy over the steps, a colour each, with its 95% interval as a bar;
    hovering a step marks it on every curve, clicking a point selects it (`pick`: its prompt and step)."""
    hover = hover_on("step")
    pick = alt.selection_point(name="pick", fields=["prompt_id", "step"], nearest=True, on="click")
    base = alt.Chart().encode(
        x=alt.X(
            "step:Q", title="step", scale=alt.Scale(nice=False, zero=False), axis=alt.Axis(format="d", tickMinStep=1)
        ),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("prompt_id:N", title="prompt", scale=alt.Scale(range=COLORS)),
    )
    tooltip = [
        alt.Tooltip("prompt_id:N", title="prompt"),
        alt.Tooltip("step:Q"),
        alt.Tooltip("accuracy:Q", format=".2f"),
        alt.Tooltip("n:Q", title="samples"),
        alt.Tooltip("low:Q", title="95% from", format=".2f"),
        alt.Tooltip("high:Q", title="95% to", format=".2f"),
    ]
    rule, dots, catcher = hover_marks("step", base, hover, tooltip)
    return alt.layer(
        base.mark_bar(size=2, opacity=0.35).encode(y="low:Q", y2="high:Q"),
        base.mark_line(point=True),
        rule,
        dots,
        catcher.add_params(pick),
        data=curves,
    ).properties(title=title, height=360)


def heatmap(grid: pd.DataFrame, x: str, title: str):
    """Prompts (rows, in `rank` order) by `x` (visit, or step): each cell the accuracy there."""
    return (
        alt.Chart(grid)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x, axis=alt.Axis(labelAngle=0, labelOverlap="greedy")),
            y=alt.Y(  # every row named: the labels' font fits a row's height, none dropped as overlapping
                "prompt_id:N",
                title="prompt",
                sort=alt.EncodingSortField("rank", op="min"),
                axis=alt.Axis(labelOverlap=False, labelFontSize=10),
            ),
            color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])),
            tooltip=[
                alt.Tooltip("prompt_id:N", title="prompt"),
                alt.Tooltip(f"{x}:O", title=x),
                alt.Tooltip("accuracy:Q", format=".2f"),
                alt.Tooltip("n:Q", title="samples"),
            ],
        )
        .properties(title=title, height=alt.Step(15))
    )


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def view():
    store = store_for(run["name"])
    if store.count() == 0:
        st.info("This run has no rollouts yet.")
        return
    if run.get("read_only"):  # a plain TRL run: no correctness, so no accuracy per prompt
        st.caption(
            "A TRL run records no correctness, which the accuracy curves, the heatmap and the leaderboards "
            "need: here is each prompt's mean reward. Click a row to read its rollouts."
        )
        rows = store.prompt_rewards()
        event = st.dataframe(
            rows,
            hide_index=True,
            on_select="rerun",
            selection_mode=ROW_CLICK,
            key="trl_prompts",
            column_config={
                c: st.column_config.NumberColumn(format="%.3f") for c in ("mean_reward", "first_reward", "last_reward")
            },
        )
        if (clicked := clicked_row(event)) is not None:
            open_rollouts(rows.iloc[clicked]["prompt_id"])
        return
    min_samples = st.number_input(
        "Minimum sampled completions per prompt",
        min_value=1,
        value=1,
        key="min_samples",
        help="Leave out prompts seen too rarely for their accuracy to mean much.",
    )
    everyone = store.leaderboard("most_changed", limit=10_000, min_samples=min_samples)
    labels = {p: f"{p} · {q[:60]}" for p, q in zip(everyone["prompt_id"], everyone["question"])}
    picked = st.multiselect(
        "Prompts (default: the ones whose accuracy changed most)",
        list(labels),
        default=everyone["prompt_id"].head(8).tolist(),
        format_func=labels.get,
        key="picked",
    )
    bin = step_bin(*store.step_range())  # a long run: a point per bin of steps, not per step
    curves = store.prompt_accuracy(picked, bin=bin)
    if len(curves):
        title = (
            "Accuracy per step (share of the group's K samples that were correct; bars: 95% interval)"
            if bin == 1
            else f"Accuracy per {bin} steps (share of the prompt's samples there that were correct; bars: 95% interval)"
        )
        event = st.altair_chart(accuracy_curves(curves, title), key="curves", on_select="rerun", selection_mode="pick")
        picked_point = event.selection["pick"]
        if picked_point:
            open_rollouts(picked_point[0]["prompt_id"], int(picked_point[0]["step"]), bin)
        st.caption(
            "Click a point to read that prompt's rollouts at that step."
            if bin == 1
            else f"Click a point to read that prompt's rollouts in its {bin} steps."
        )

    by_visit = st.radio(
        "Heatmap columns",
        ["k-th visit of the prompt", "training step"],
        horizontal=True,
        key="heat_x",
        help="A prompt comes back every few steps: by visit, each row has no gaps.",
    )
    shown = everyone.head(40)["prompt_id"].tolist()
    if by_visit.startswith("k-th"):
        grid, x, title = store.prompt_visits(shown), "visit", "Prompts × visits"
    else:
        grid, title = store.prompt_accuracy(shown, bin=bin), "Prompts × steps"
        x = "step" if bin == 1 else "first step of the bin"
        grid = grid.rename(columns={"step": x})
    if len(grid):
        st.caption(
            f"The {grid['prompt_id'].nunique()} prompts whose accuracy changed most, a row each"
            + (f"; a column per {bin} steps." if bin > 1 and x != "visit" else ".")
        )
        order = {p: i for i, p in enumerate(shown)}  # the most changed first
        st.altair_chart(heatmap(grid.assign(rank=grid["prompt_id"].map(order)), x, title), key="heatmap")

    st.subheader("Leaderboards")
    tabs = st.tabs(list(BOARDS.values()))
    for tab, board in zip(tabs, BOARDS):
        with tab:
            rows = store.leaderboard(board, limit=25, min_samples=min_samples)
            if rows.empty:
                st.caption("No prompts here.")
                continue
            rows["accuracy (95% interval)"] = [
                f"{a:.2f} [{low:.2f}, {high:.2f}]" for a, low, high in zip(rows["accuracy"], rows["low"], rows["high"])
            ]
            event = st.dataframe(
                rows[
                    [
                        "prompt_id",
                        "question",
                        "first_accuracy",
                        "last_accuracy",
                        "change",
                        "accuracy (95% interval)",
                        "steps",
                        "n",
                    ]
                ],
                hide_index=True,
                on_select="rerun",
                selection_mode=ROW_CLICK,
                key=f"board_{board}",
                column_config={
                    c: st.column_config.NumberColumn(format="%.2f")
                    for c in ("first_accuracy", "last_accuracy", "change")
                },
            )
            if (clicked := clicked_row(event)) is not None:
                open_rollouts(rows.iloc[clicked]["prompt_id"])


view()
