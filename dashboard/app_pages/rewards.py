"""Rewards, from the rollouts themselves: over the steps, the mean ± std, the categories and the format
rate (hovering a step marks it on each); then, over a step window, a histogram and the lengths per
category. Vega-Lite charts with fixed specs, so that a live refresh updates their data in place. Last,
"Try another reward": core.replay scores every logged completion again with other rewards."""

import re
import warnings

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import ConfigError
from core.replay import as_json, number, reward_specs, run_replay, saved
from core.rewards import REWARDS
from core.rundir import read_config, replay_names, replay_path, replay_report_path
from core.trl_runs import is_trl_run
from dashboard.caches import folder_of, store_for
from dashboard.widgets import (
    CATEGORY_COLORS,
    CHART_SECONDS,
    COLORS,
    ROW_CLICK,
    clicked_row,
    curve_grid,
    hover_marks,
    hover_on,
    live_every,
    pick_run,
    plain,
    smooth,
    smoothing_slider,
    step_window,
)

st.title("Rewards")
run = pick_run()
if run is None:
    st.stop()

WIDTH, HEIGHT = 380, 220
CATEGORIES = list(CATEGORY_COLORS)
STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # whole steps
SHARES = {"format_rate": "format rate", "accuracy": "accuracy"}  # columns of step_aggregates, and their curves
FEW_POINTS = 100  # a curve of this many steps or fewer marks each one; a longer run's would hide its line


def over_steps(steps: pd.DataFrame, graded: bool):
    """The charts over the steps, one Vega-Lite chart: the mean reward ± std, and (`graded`: a run of
    ours, whose rollouts are graded) the reward categories, and the format rate and accuracy."""
    hover = hover_on("step")
    few = len(steps) <= FEW_POINTS
    step = alt.X("step:Q", title="step", scale=alt.Scale(nice=False, zero=False), axis=STEP_AXIS)
    mean = alt.Chart().encode(x=step, y=alt.Y("mean_reward:Q", title="reward"))
    panels = [
        alt.layer(
            mean.mark_area(opacity=0.2, color=COLORS[0]).encode(y="lower_smoothed:Q", y2="upper_smoothed:Q"),
            mean.mark_line(opacity=0.25, strokeWidth=1, color=COLORS[0]),  # the raw means, faint
            mean.mark_line(point=few, color=COLORS[0]).encode(y="mean_reward_smoothed:Q"),
            *hover_marks(
                "step",
                mean.encode(color=alt.value(COLORS[0])),
                hover,
                [
                    alt.Tooltip("step:Q"),
                    alt.Tooltip("mean_reward:Q", title="mean reward", format=".3f"),
                    alt.Tooltip("std_reward:Q", title="std", format=".3f"),
                    alt.Tooltip("n:Q", title="completions"),
                ],
            ),
        ).properties(title="Mean reward ± std (all sampled completions)", width=WIDTH, height=HEIGHT)
    ]
    if not graded:
        return alt.concat(*panels, data=steps, columns=2)
    color = alt.Color(
        "category:N",
        title=None,
        legend=alt.Legend(orient="bottom"),
        scale=alt.Scale(domain=CATEGORIES, range=list(CATEGORY_COLORS.values())),
    )
    bars = (
        alt.Chart()
        .transform_fold(CATEGORIES, as_=["category", "completions"])
        .transform_calculate(
            order=f"indexof({CATEGORIES}, datum.category)",
            left="datum.step - 0.45",
            right="datum.step + 0.45",
        )
        .transform_stack(stack="completions", groupby=["step"], sort=[alt.SortField("order")], as_=["bottom", "top"])
    )
    totals = (
        alt.Chart()
        .transform_calculate(completions="datum.malformed + datum.wrong + datum.correct")
        .encode(x=step, y="completions:Q")
    )
    panels.append(
        alt.layer(  # a bar a step, as wide as the step
            bars.mark_bar().encode(
                x=alt.X("left:Q", title="step", scale=alt.Scale(nice=False, zero=False), axis=STEP_AXIS),
                x2="right:Q",
                y=alt.Y("bottom:Q", title="completions"),
                y2="top:Q",
                color=color,
            ),
            *hover_marks(
                "step",
                totals.encode(color=alt.value("gray")),
                hover,
                [alt.Tooltip("step:Q"), *[alt.Tooltip(f"{c}:Q") for c in CATEGORIES]],
            ),
        ).properties(title="Reward categories per step", width=WIDTH, height=HEIGHT)
    )
    shares = (
        alt.Chart()
        .transform_fold([f"{c}_smoothed" for c in SHARES], as_=["measure", "share"])
        .transform_calculate(measure="indexof(datum.measure, 'accuracy') == 0 ? 'accuracy' : 'format rate'")
        .encode(
            x=step,
            y=alt.Y("share:Q", title="share of completions", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "measure:N",
                title=None,
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(domain=list(SHARES.values()), range=COLORS[:2]),
            ),
        )
    )
    panels.append(
        alt.layer(
            shares.mark_line(point=few),
            *hover_marks(
                "step",
                shares,
                hover,
                [alt.Tooltip("measure:N", title="curve"), alt.Tooltip("step:Q"), alt.Tooltip("share:Q", format=".3f")],
            ),
        ).properties(title="Format rate and accuracy over time", width=WIDTH, height=HEIGHT)
    )
    return alt.concat(*panels, data=steps, columns=2).resolve_scale(color="independent")


def in_window(histogram: pd.DataFrame, lengths: pd.DataFrame | None):
    """The charts of a step window, one Vega-Lite chart: the reward histogram, and (a run of ours) the
    completion lengths per category, stacked so that no category hides another."""
    panels = [
        alt.Chart(histogram)
        .mark_bar(color=COLORS[0])
        .encode(
            x=alt.X("reward:O", title="reward", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("n:Q", title="completions"),
            tooltip=[alt.Tooltip("reward:Q"), alt.Tooltip("n:Q", title="completions")],
        )
        .properties(title="Reward histogram", width=WIDTH, height=HEIGHT)
    ]
    if lengths is not None:
        panels.append(
            alt.Chart(lengths)
            .mark_bar()
            .encode(
                x=alt.X("tokens:Q", title="completion tokens", scale=alt.Scale(zero=False)),
                x2="tokens_end:Q",
                y=alt.Y("top:Q", title="completions"),  # each bar from its own bottom: a ranged x needs y2 too
                y2="bottom:Q",
                color=alt.Color(
                    "category:N",
                    title=None,
                    legend=alt.Legend(orient="bottom"),
                    scale=alt.Scale(domain=CATEGORIES, range=list(CATEGORY_COLORS.values())),
                ),
                tooltip=[
                    "category:N",
                    alt.Tooltip("tokens:Q", title="tokens from"),
                    alt.Tooltip("tokens_end:Q", title="to (not incl.)"),
                    alt.Tooltip("n:Q", title="completions"),
                ],
            )
            .properties(title="Completion length by category", width=WIDTH, height=HEIGHT)
        )
    return alt.hconcat(*panels).resolve_scale(color="independent")


def weights_of(text: str, rewards: int) -> list[float]:
    """The replay's weights as typed, separated by commas (core.replay.number each), else ConfigError naming
    the first that is not a number, or saying how a decimal is written where commas made the count wrong."""
    weights = []
    for each in text.replace(",", " ").split():
        try:
            weights.append(number(each))
        except ValueError:
            raise ConfigError(
                f"weight {each!r} is not a finite number: give numbers separated by commas, e.g. 1.0, 0.5"
            ) from None
    if len(weights) not in (0, rewards) and re.search(r"\d,\d", text):
        raise ConfigError(
            f"{len(weights)} weights for {rewards} reward{'s' * (rewards != 1)}: weights are separated by commas, "
            "so a decimal is written with a point (1.5, not 1,5)"
        )
    return weights


@st.fragment(run_every=live_every(run, CHART_SECONDS))
def charts():
    store = store_for(run["name"])
    agg = store.step_aggregates()
    if agg.empty:
        st.info("This run has no rollouts yet.")
        return
    graded = not run.get("read_only")  # a plain TRL run records rewards only
    steps = (
        agg.assign(  # ± std, never past the rewards actually seen at that step (a reward in [0, 1] has no band below 0)
            upper=(agg["mean_reward"] + agg["std_reward"]).clip(upper=agg["max_reward"]),
            lower=(agg["mean_reward"] - agg["std_reward"]).clip(lower=agg["min_reward"]),
        )
    )
    weight = smoothing_slider()  # as Runs smooths TRL's metrics (TensorBoard's), the choice shared
    if graded:
        steps = steps.merge(store.categories_per_step(), on="step")
    else:
        st.caption(
            "A TRL run records no parsed answer or correctness: the categories (malformed, wrong, correct), "
            "the format rate and the accuracy need them. The histogram shows its rewards."
        )
    for column in ("mean_reward", "lower", "upper", *(SHARES if graded else ())):
        steps[f"{column}_smoothed"] = smooth(steps[column].tolist(), weight)
    with warnings.catch_warnings():  # Altair says it made the panels' hover selections one: as meant
        warnings.filterwarnings("ignore", "Automatically deduplicated selection parameter")
        st.altair_chart(over_steps(steps, graded), key="over_steps")

    lo, hi = int(agg["step"].min()), int(agg["step"].max())
    step_min, step_max = step_window("Step window", lo, hi, key="window")
    width = store.length_bin(step_min, step_max)  # bins from the lengths: short completions get a bar a token
    st.markdown(
        f"**Steps {step_min or lo}–{step_max or hi}**: the rewards"
        + (
            ""
            if not graded
            else ", and the completions' lengths in tokens" + (f" (bins of {width})" if width > 1 else "")
        )
    )
    lengths = store.length_by_category(bin=width, step_min=step_min, step_max=step_max) if graded else None
    if lengths is not None:  # each bar as wide as its bin, stacked malformed, wrong, correct
        lengths = lengths.assign(tokens_end=lengths["tokens"] + width, order=lengths["category"].map(CATEGORIES.index))
        lengths = lengths.sort_values(["tokens", "order"], ignore_index=True)
        lengths["top"] = lengths.groupby("tokens")["n"].cumsum()
        lengths["bottom"] = lengths["top"] - lengths["n"]
    st.altair_chart(in_window(store.reward_histogram(step_min, step_max), lengths), key="in_window")


def replay_view(report: dict, run_name: str) -> None:
    """A replay's report (core.replay's JSON): the counts, the curves before and after, the changed rows,
    each a click away from its rollout."""
    rewards = ", ".join(f"{r['name']} × {r['weight']:g}" for r in report["rewards"])
    st.markdown(f"**Scored with {rewards}**: {report['rollouts']:,} rollouts in {report['seconds']:.1f} s")
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Samples whose reward changed",
        f"{report['changed']:,}",
        f"{report['changed'] / max(report['rollouts'], 1):.1%} of all",
        delta_color="off",
        delta_arrow="off",  # a share, not a change
    )
    c2.metric(
        "Groups whose advantages change sign",
        f"{report['sign_flips']:,}",
        f"of {report['groups']:,} groups",
        delta_color="off",
        delta_arrow="off",
    )
    steps = pd.DataFrame(report["steps"])
    flat = steps["no_signal_after"].mean() - steps["no_signal_before"].mean()
    c3.metric(
        "Groups without a signal",
        f"{steps['no_signal_after'].mean():.1%}",
        f"{100 * flat:+.1f} points",
        delta_color="inverse",
        delta_arrow="auto" if round(100 * flat, 1) != 0 else "off",  # +0.0 points: no arrow
    )
    curves = pd.concat(
        [
            steps.assign(title=title, label=label, x=steps["step"], value=steps[f"{column}_{label}"])
            for title, column in (("Mean reward", "mean"), ("Groups without a signal", "no_signal"))
            for label in ("before", "after")
        ]
    )
    st.altair_chart(
        curve_grid(curves[["title", "label", "x", "value"]], ["Mean reward", "Groups without a signal"], 0.0),
        key="replay_curves",
    )
    rows = pd.DataFrame(report["changed_rows"])
    if rows.empty:
        st.success("No sample's reward changed.")
        return
    shown = f"the first {len(rows):,} of {report['changed']:,}" if report["changed"] > len(rows) else "every one"
    st.caption(f"Changed samples ({shown}): click a row to open the rollout on Rollouts.")
    event = st.dataframe(
        rows.assign(
            reward=[
                f"{b:g} → {a:g}" if b is not None and a is not None else f"{b} → {a}"
                for b, a in zip(rows["before"], rows["after"])
            ]
        )[["step", "prompt_id", "sample", "reward", "completion"]],
        hide_index=True,
        on_select="rerun",
        selection_mode=ROW_CLICK,
        key="replay_rows",
        width="stretch",
    )
    if (clicked := clicked_row(event)) is not None:
        row = rows.iloc[clicked]
        st.session_state.pop("focus", None)
        st.switch_page(
            "app_pages/rollouts.py",
            query_params={
                "run": run_name,
                "prompt_id": row["prompt_id"],
                "step": str(row["step"]),
                "sample": str(row["sample"]),
            },
        )


def try_another_reward() -> None:
    """Choose rewards among the built-ins and the run's own, replay them on every logged completion (or
    show a saved replay): what they would have scored, without training."""
    st.subheader("Try another reward")
    folder = folder_of(run["name"])
    trl = is_trl_run(folder)  # its folder is TRL's: read, never written
    st.caption(
        "Scores every logged completion again with the rewards chosen here, as TRL would call them; nothing "
        + (
            "trains and nothing is written into a TRL folder. Your own function: "
            "`python -m core.replay RUN --reward module:function`."
            if trl
            else "trains and nothing is written unless you name the replay to save. Your own function: "
            "`python -m core.replay RUN --reward module:function --save NAME`, then pick it below."
        )
    )
    own = [r["name"] for r in read_config(folder).get("rewards") or [] if isinstance(r, dict) and "name" in r]
    offered = list(dict.fromkeys([*REWARDS, *own]))
    with st.form("replay"):
        chosen = st.multiselect(
            "Rewards",
            offered,
            default=["format" if trl else "gsm8k_lenient"],  # a TRL folder records no answers to grade against
            help="The built-in rewards (docs/config.md) and the ones this run trained with.",
            key="replay_rewards",
        )
        weights = st.text_input(
            "Weights, in the same order",
            "",
            placeholder="1.0 each",
            key="replay_weights",
            help="Numbers separated by commas, e.g. 1.0, 0.5; left empty, 1.0 each.",
        )
        name = (
            ""
            if trl
            else st.text_input(
                "Save as (optional)", "", placeholder="a name: saved in the run's replays/ folder", key="replay_name"
            )
        )
        go = st.form_submit_button("Replay", type="primary")
    key = f"saved_replay:{run['name']}"  # each run its own pick, as its own replay shown
    if go:
        bar = st.progress(0.0, "Replaying…")
        try:
            if not chosen:
                raise ConfigError("choose at least one reward to replay with")
            rewards = reward_specs(chosen, weights_of(weights, len(chosen)))
            report = run_replay(
                folder,
                rewards,
                name.strip() or None,
                store=store_for(run["name"]),
                progress=lambda done, total: bar.progress(min(1.0, done / total), f"{done:,} of {total:,} rollouts"),
            )
        except (ConfigError, ValueError) as e:
            st.error(plain(str(e).splitlines()[0]))  # what was shown stays, with its pick below
        else:
            st.session_state["replay_shown"] = (run["name"], as_json(report))
            st.session_state[key] = report.saved_as or ""  # the list shows what is shown: this one, or none
            if report.saved_as:
                scores = replay_path(folder, report.saved_as).relative_to(folder)
                summary = replay_report_path(folder, report.saved_as).relative_to(folder)
                st.success(plain(f"Saved as {report.saved_as}: {scores}, and its report {summary}"))
        finally:
            bar.empty()

    def show_saved():  # on choosing a saved replay (not at every rerun: a fresh replay stays shown until then)
        pick = st.session_state[key]
        st.session_state["replay_shown"] = (run["name"], saved(folder, pick) or pick) if pick else None

    if not trl:  # a plain TRL folder has none: nothing is saved into it
        names = replay_names(folder)  # after a replay just saved
        st.selectbox(
            "Or show a saved replay",
            ["", *names],
            format_func=lambda n: n or "—",
            key=key,
            disabled=not names,
            on_change=show_saved,
        )
    shown = st.session_state.get("replay_shown")
    if shown and shown[0] == run["name"]:
        if isinstance(shown[1], str):
            st.error(
                f"The saved replay {shown[1]} cannot be read ({replay_report_path(folder, shown[1]).relative_to(folder)})."
            )
        else:
            replay_view(shown[1], run["name"])


charts()
try_another_reward()
