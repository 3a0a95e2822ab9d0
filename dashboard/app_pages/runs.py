"""Runs: every run at a glance; for the selected one, live progress, charts (other runs overlaid on
request), log, stop/delete."""

import pandas as pd
import streamlit as st

from core import REPO
from core.advantage import run_settings
from core.doctor import MIN_STEPS
from core.errors import ConfigError
from core.rundir import checkpoints, read_config
from core.runs import delete, log_tail, resume, reuse, stop
from dashboard.caches import all_runs, diagnosis, folder_of, open_folder, runs_root, small_rollouts, store_for
from dashboard.widgets import (
    CHART_POINTS,
    CHART_SECONDS,
    curve_grid,
    fmt_duration,
    fmt_pct,
    fmt_time,
    is_live,
    live_every,
    pick_run,
    plain,
    progress,
    show_findings,
    smoothing_slider,
    wanted_run,
    x_axis_choice,
)

st.title("Runs")
OTHER_SECONDS = (
    60  # the runs table and TRL's other metrics, while a run is live: a trend over a minute is what they show
)


@st.fragment(run_every=OTHER_SECONDS if any(is_live(r) for r in all_runs()) else None)
def runs_table():
    """Every run, refreshed every OTHER_SECONDS while any is live (the grid is drawn anew at each refresh,
    which costs the browser: docs/measured.md), read from their small files alone (never their rollouts).
    The selected run's progress is its bar's below, every LIVE_SECONDS: the table gives no second count."""
    runs, selected = all_runs(), wanted_run()
    if runs:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "run": r["name"],
                        "model": r["model"],
                        "state": r["state"],
                        "progress": "live: its bar below"
                        if r["name"] == selected and is_live(r)
                        else f"{r['step']}/{r['num_train_steps'] or '?'}",
                        "reward (last step)": "–"
                        if r["reward"] is None
                        else f"{r['reward']:.3f}",  # a new run: none yet
                        "eval before → after": f"{fmt_pct(r['eval_before'])} → {fmt_pct(r['eval_after'])}",
                        "started": fmt_time(r["started"]),
                        "duration": fmt_duration(r["duration"]),
                    }
                    for r in runs
                ]
            ),
            hide_index=True,
            column_config={
                "reward (last step)": st.column_config.TextColumn(
                    help="The last mean reward TRL logged (at its latest logging step)"
                )
            },
        )


runs_table()
with st.expander("Open a TRL run by path"):
    with st.form("open_path", border=False):
        where = st.text_input(
            "The output_dir of a TRL GRPOTrainer run",
            placeholder="~/my_trl_outputs/run1",
            help="Opened read-only and listed with the runs until the dashboard stops; or start "
            "the dashboard with RUNS_DIR=<the folder holding your output_dirs>.",
        )
        if st.form_submit_button("Open") and where.strip():
            try:
                st.session_state["selected_run"] = open_folder(where)
                st.query_params["run"] = st.session_state["selected_run"]
                st.rerun()
            except ValueError as e:
                st.error(plain(str(e)))
run = pick_run()
if run is None:
    st.stop()
name = run["name"]
path = folder_of(name)

done_message = st.session_state.pop("runs_message", None)  # what the last action did, after the rerun
if done_message:
    st.success(done_message)
actions = st.session_state.get("runs_actions", 0)  # popover keys: a new one after each action, closed


def acted(message: str) -> None:
    st.session_state["runs_message"] = message
    st.session_state["runs_actions"] = actions + 1
    st.rerun()


def controls():
    """Stop, Resume, Launch again, Delete; none for a run this dashboard only reads."""
    b1, b2, b3, b4 = st.columns([1, 1, 2, 3])
    if b1.button(
        "Stop",
        icon=":material/stop_circle:",
        disabled=not is_live(run),
        help="During training: ends after the current step and saves a checkpoint to resume from. "
        "While loading or evaluating: ends at once.",
    ):
        st.toast(f"Stopping {name}…" if stop(path) else "The run is not running.")
    resumable = not is_live(run) and bool(checkpoints(path))
    with b4.popover("Resume", icon=":material/play_circle:", disabled=not resumable, key=f"resume_{actions}"):
        target = run["num_train_steps"] or 0
        until = st.number_input(
            "Train until step", 1, 10_000_000, target + 20 if run["state"] == "finished" else target
        )
        if st.button("Resume from the latest checkpoint", type="primary"):
            try:
                resume(path, REPO, num_train_steps=int(until))
            except (ValueError, ConfigError) as e:
                st.error(plain(str(e)))
            else:
                acted(f"Resumed {name} from {checkpoints(path)[-1].name}, to step {int(until)}.")
    if b3.button("Launch again with these settings", icon=":material/replay:"):
        st.switch_page("app_pages/launch.py", query_params={"from_run": name})
    with b2.popover("Delete", icon=":material/delete:", disabled=is_live(run), key=f"delete_{actions}"):
        st.write(f"Delete **{name}** and all its files?")
        if st.button("Yes, delete it", type="primary"):
            try:
                delete(path, runs_root())
            except ValueError as e:
                st.error(plain(str(e)))
            else:
                st.session_state.pop("selected_run", None)
                st.query_params.clear()
                acted(f"Deleted {name}.")


if run.get("read_only"):
    st.info(f"{name} is {run['read_only']}.")
else:
    controls()


def metric_curves(series: dict[str, pd.DataFrame], charts: list[tuple[list[str], str]], x: str) -> pd.DataFrame:
    """The curves of each chart (metric names, title) for curve_grid: of each run of `series` (run name ->
    its metric_series; this run first), a curve per metric, against `x` (step or minutes). A curve is
    named by its run (a colour per run on every chart), and by its metric where a chart has several."""
    parts = []
    for names, title in charts:
        for run_name, of_run in series.items():
            for metric in names:
                part = of_run[of_run["name"] == metric]
                label = run_name if len(names) == 1 else metric if len(series) == 1 else f"{run_name} · {metric}"
                if len(part):
                    parts.append(pd.DataFrame({"title": title, "label": label, "x": part[x], "value": part["value"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["title", "label", "x", "value"])


c_smooth, c_x, c_overlay = st.columns([2, 1, 3])
with c_smooth:
    smoothing = smoothing_slider()
with c_x:
    x_axis = x_axis_choice()
overlay = c_overlay.multiselect(
    "Overlay other runs",
    [r["name"] for r in all_runs() if r["name"] != name],
    key="overlay",
    help="Their curves on these charts, each in a colour of its own (Compare sets runs side by side in full).",
)


@st.fragment(run_every=live_every(run))
def live_status():
    """Progress and evals: text, redrawn every LIVE_SECONDS."""
    current = next((r for r in all_runs() if r["name"] == name), run)
    if current["state"] != run["state"]:
        st.rerun()  # the run ended: redraw the page (buttons, live refresh off)
    small = small_rollouts(path)
    store = store_for(name, rollouts=small)  # a large run's rollouts: only once a page needs them
    bar, text = progress(current, store.seconds_per_step())
    st.progress(bar, text=text)
    if current["state"] in ("failed", "crashed"):
        st.error(
            f"This run {current['state']}: {plain(current['error'] or 'its process ended without a final state')}. "
            "The end of its log is below."
        )
    before, after = (current["evals"].get(phase, {}) for phase in ("before", "after"))
    if before or after:
        st.caption(
            "Eval before → after: "
            + " · ".join(
                f"{label} {fmt_pct(before.get(key))} → {fmt_pct(after.get(key))}"
                for key, label in (
                    ("eval_accuracy", "strict accuracy"),
                    ("eval_lenient_accuracy", "lenient accuracy (the last number)"),
                    ("eval_format_rate", "well-formed Final line"),
                )
            )
        )


# With the advantage scaled by the whole batch's std, TRL decides "no signal" for the batch, not group by
# group: each step is 0 or 1. Under scale_rewards=batch, when all the batch's rewards are equal; under
# normalize_then_sum (each reward normalised in its group, then summed), when every group's are.
BATCH_FLAT = {
    "batch": "Steps whose whole batch had equal rewards (TRL's frac_reward_zero_std, scale_rewards=batch)",
    "normalize_then_sum": "Steps where every group had equal rewards (TRL's frac_reward_zero_std, normalize_then_sum)",
}
KEY_CHARTS = [
    (["reward"], "Mean reward (TRL's reward)"),
    (["frac_reward_zero_std"], "Share of groups with no learning signal (all K rewards equal)"),
    (["completions/mean_length"], "Completion length (tokens)"),
]
OTHER_CHARTS = [
    (["reward_std"], "Reward std over the step's samples (TRL's reward_std)"),
    (["loss"], "Loss"),
    (["kl"], "KL to the reference model (logged when grpo.beta > 0)"),
    (["entropy"], "Entropy of the model's token choices"),
    (["completions/clipped_ratio"], "Clipped ratio (hit max_new_tokens)"),
    (["clip_ratio/region_mean"], "Share of tokens PPO's clip cut (TRL's clip_ratio/region_mean)"),
    (["grad_norm"], "Gradient norm"),
    (["learning_rate"], "Learning rate"),
    (["step_time"], "Seconds per step"),
]


def draw_charts(store, charts: list[tuple[list[str], str]]) -> bool:
    """TRL's metric curves, two a row, with the overlaid runs' (their metrics only: small files); False if
    none of them was logged for this run."""
    metrics = [name for names, _ in charts for name in names]
    series = {name: store.metric_series(metrics, points=CHART_POINTS)}
    if not len(series[name]):
        return False
    for other in overlay:
        if folder_of(other).is_dir():  # deleted meanwhile: left out
            series[other] = store_for(other, rollouts=False).metric_series(metrics, points=CHART_POINTS)
    curves = metric_curves(series, charts, x_axis)
    chart = curve_grid(curves, [title for _, title in charts], smoothing, x_axis)
    if chart is not None:
        st.altair_chart(chart, key=charts[0][1])
    return chart is not None


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def key_charts():
    """The doctor's findings and the curves that say whether GRPO learns, redrawn every CHART_SECONDS (a
    chart costs the browser far more than text; the doctor looks again every DOCTOR_SECONDS anyway)."""
    small = small_rollouts(path)
    store = store_for(name, rollouts=small)
    read = bool(store.count())  # the rollouts are in the store: the doctor's checks on them can run
    early = min(store.status.get("global_step") or 0, MIN_STEPS)  # "n logged" stays true while n is small
    show_findings(diagnosis(str(path), run["state"], read, store, early), name, read)
    if not small and not read:
        st.caption(
            "The run doctor reads TRL's metrics and the evals here; the checks that need the rollouts "
            "themselves (format, degenerate completions, examples) join once a page has read them "
            "(Rollouts, Rewards, Prompts or Eval)."
        )
    reward_parts = [n for n in store.metric_names() if n.startswith("rewards/") and n.endswith("/mean")]
    charts = (
        KEY_CHARTS[:1] + [(reward_parts, "Each reward function's mean")] + KEY_CHARTS[1:]
        if len(reward_parts) > 1
        else KEY_CHARTS
    )  # with one reward function its mean is the mean reward
    settings = run_settings(read_config(path))
    mode = settings["aggregation"] if settings["aggregation"] == "normalize_then_sum" else settings["scale_rewards"]
    if mode in BATCH_FLAT:
        charts = [(names, BATCH_FLAT[mode] if names == ["frac_reward_zero_std"] else title) for names, title in charts]
    if not draw_charts(store, charts):
        st.info(
            "No training step logged yet: TRL's metrics appear after the first step. The Rewards page "
            "shows the rollouts themselves."
        )


@st.fragment(run_every=live_every(run, OTHER_SECONDS))
def other_charts():
    """TRL's other metrics and the log, redrawn every OTHER_SECONDS while the run is live."""
    if is_live(run):
        st.caption(
            f"TRL's other metrics, redrawn every {OTHER_SECONDS} s while the run trains "
            f"(the charts above: every {CHART_SECONDS} s)."
        )
    draw_charts(store_for(name, rollouts=small_rollouts(path)), OTHER_CHARTS)
    if not run.get("read_only"):  # a TRL run's output went where it was started
        with st.expander("train.log (last lines)", expanded=run["state"] in ("failed", "crashed")):
            st.code(log_tail(path) or "(empty)", language=None)


def reuse_note():
    """What a run that reuses its samples over several updates does differently, said once above its charts."""
    updates = reuse(path)
    if updates > 1:
        st.info(
            f"Each batch of samples trains {updates:g} updates (this run's grpo.steps_per_generation, "
            "generation_batch_size or num_iterations): TRL samples only at the first of them, so rollouts and "
            "the reward metrics are logged at those steps alone, and in the later updates the policy has moved "
            "from the one that sampled, so PPO's clip can act (clip_ratio).",
            icon=":material/repeat:",
        )


live_status()
reuse_note()
key_charts()
other_charts()
