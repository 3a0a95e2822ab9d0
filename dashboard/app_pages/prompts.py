"""Prompts: per-prompt accuracy curves, a prompts × steps heatmap, leaderboards; click to read."""

import plotly.express as px
import streamlit as st

from core.stats import wilson_interval
from dashboard.caches import store_for
from dashboard.widgets import CHART_SECONDS, live_every, pick_run, step_bin

BOARDS = {"most_improved": "Most improved", "regressed": "Regressed", "never_solved": "Never solved",
          "always_solved": "Always solved"}

st.title("Prompts")
run = pick_run()
if run is None:
    st.stop()


def open_rollouts(prompt_id: str, step: int | None = None) -> None:
    query = {"run": run["name"], "prompt_id": prompt_id}
    if step is not None:
        query["step"] = str(step)
    st.session_state.pop("focus", None)
    st.switch_page("app_pages/rollouts.py", query_params=query)


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def view():
    store = store_for(run["name"])
    if store.count() == 0:
        st.info("This run has no rollouts yet.")
        return
    if run.get("read_only"):  # a plain TRL run: no correctness, so no accuracy per prompt
        st.caption("A TRL run records no correctness, which the accuracy curves, the heatmap and the leaderboards "
                   "need: here is each prompt's mean reward. Click a row to read its rollouts.")
        rows = store.prompt_rewards()
        event = st.dataframe(rows, hide_index=True, on_select="rerun", selection_mode="single-row", key="trl_prompts",
                             column_config={c: st.column_config.NumberColumn(format="%.3f")
                                            for c in ("mean_reward", "first_reward", "last_reward")})
        if event.selection.rows:
            open_rollouts(rows.iloc[event.selection.rows[0]]["prompt_id"])
        return
    min_samples = st.number_input("Minimum sampled completions per prompt", min_value=1, value=1, key="min_samples",
                                  help="Leave out prompts seen too rarely for their accuracy to mean much.")
    everyone = store.leaderboard("most_changed", limit=10_000, min_samples=min_samples)
    labels = {p: f"{p} · {q[:60]}" for p, q in zip(everyone["prompt_id"], everyone["question"])}
    picked = st.multiselect("Prompts (default: the ones whose accuracy changed most)", list(labels),
                            default=everyone["prompt_id"].head(8).tolist(), format_func=labels.get, key="picked")
    bin = step_bin(*store.step_range())  # a long run: a point per bin of steps, not per step
    curves = store.prompt_accuracy(picked, bin=bin)
    if len(curves):
        bounds = [wilson_interval(a * n, n) for a, n in zip(curves["accuracy"], curves["n"])]
        curves["above"] = [high - a for (_, high), a in zip(bounds, curves["accuracy"])]
        curves["below"] = [a - low for (low, _), a in zip(bounds, curves["accuracy"])]
        fig = px.line(curves, x="step", y="accuracy", color="prompt_id", markers=True, hover_data=["n"],
                      custom_data=["prompt_id"], error_y="above", error_y_minus="below",
                      title="Accuracy per step (share of the group's K samples that were correct; bars: 95% interval)"
                      if bin == 1 else f"Accuracy per {bin} steps (share of the prompt's samples there that were correct; "
                                       "bars: 95% interval)")
        fig.update_yaxes(range=[-0.05, 1.05])
        event = st.plotly_chart(fig, key="curves", on_select="rerun", selection_mode="points")
        if event.selection.points:
            point = event.selection.points[0]
            open_rollouts(point["customdata"][0], int(point["x"]) if bin == 1 else None)
        st.caption("Click a point to read that prompt's rollouts at that step." if bin == 1 else
                   "Click a point to read that prompt's rollouts.")

    by_visit = st.radio("Heatmap columns", ["k-th visit of the prompt", "training step"], horizontal=True,
                        key="heat_x", help="A prompt comes back every few steps: by visit, each row has no gaps.")
    shown = everyone.head(40)["prompt_id"].tolist()
    if by_visit.startswith("k-th"):
        grid = store.prompt_visits(shown)
        x, title, xlabel = "visit", f"Prompts × visits ({len(set(grid['prompt_id']))} most changed prompts)", "visit"
    else:
        grid = store.prompt_accuracy(shown, bin=bin)
        per = f", a column per {bin} steps" if bin > 1 else ""
        x, title = "step", f"Prompts × steps ({len(set(grid['prompt_id']))} most changed prompts{per})"
        xlabel = "step" if bin == 1 else "first step of the bin"
    if len(grid):
        heat = grid.pivot(index="prompt_id", columns=x, values="accuracy")
        fig = px.imshow(heat, aspect="auto", color_continuous_scale="RdYlGn", zmin=0, zmax=1,
                        labels={"color": "accuracy", "x": xlabel}, title=title)
        st.plotly_chart(fig, key="heatmap")

    st.subheader("Leaderboards")
    tabs = st.tabs(list(BOARDS.values()))
    for tab, board in zip(tabs, BOARDS):
        with tab:
            rows = store.leaderboard(board, limit=25, min_samples=min_samples)
            if rows.empty:
                st.caption("No prompts here.")
                continue
            rows["accuracy (95% interval)"] = [
                f"{c / n:.2f} [{low:.2f}, {high:.2f}]" for c, n in zip(rows["correct"], rows["n"])
                for low, high in [wilson_interval(c, n)]]
            event = st.dataframe(
                rows[["prompt_id", "question", "first_accuracy", "last_accuracy", "change",
                      "accuracy (95% interval)", "steps", "n"]],
                hide_index=True, on_select="rerun", selection_mode="single-row", key=f"board_{board}",
                column_config={c: st.column_config.NumberColumn(format="%.2f")
                               for c in ("first_accuracy", "last_accuracy", "change")})
            if event.selection.rows:
                open_rollouts(rows.iloc[event.selection.rows[0]]["prompt_id"])


view()
