"""The pages' widgets and formats: the run picker, the step window, the live refresh rates, progress,
the doctor's findings, smoothing, and model text shown as text."""

from __future__ import annotations

import html
import itertools
import math
import re
import textwrap
import time

import pandas as pd
import streamlit as st

from core.doctor import CHECKED
from core.runstate import LIVE_STATES
from dashboard.caches import all_runs

LIVE_SECONDS = 5  # how often a live page's text refreshes (progress, counts, tables)
CHART_SECONDS = 15  # how often a live page's charts are drawn again: redrawing a changed chart costs the
# browser CPU, which on a 2-core machine is the trainer's (docs/measured.md, watching a run)
CATEGORY_COLORS = {"malformed": "#bbbbbb", "wrong": "#f4a261", "correct": "#2a9d8f"}
CHART_POINTS = (
    1000  # at most, per curve of TRL's metrics: a long run's steps are averaged in bins (TensorBoard draws 1,000)
)
PROMPT_COLUMNS = 120  # at most, per prompt's accuracy curve and in the heatmap: readable, and small to send


# Markdown's punctuation (`&` starts an entity, `=` underlines a heading), and Streamlit's own: `$` (math)
# and `:` (its :icons: and :colour[text]).
MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=])")


def plain(text: str) -> str:
    """`text` for a Streamlit element that reads Markdown (st.error, st.write...), to show as written:
    an error names paths, globs and names (`checkpoint-*/`, `__init__`) that Markdown would reshape."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def show_findings(findings, run_name: str, read_rollouts: bool = True) -> None:
    """The run doctor's findings (core.doctor), worst first: what is happening, the evidence, the fix,
    and buttons that open the example rollouts (or eval questions); when all is well, what was checked
    (`read_rollouts`: whether the checks on the rollouts themselves could run)."""
    if not findings:
        st.success(
            f"**The run doctor found no problem.** Checked: {', '.join(CHECKED)}"
            + ("." if read_rollouts else ", on TRL's metrics and the evals: the rollouts are not read yet."),
            icon=":material/stethoscope:",
        )
    for i, f in enumerate(findings):
        steps = f" · steps {f.steps[0]}–{f.steps[1]}" if f.steps else ""
        {"problem": st.error, "warning": st.warning, "info": st.info}[f.severity](
            f"**{f.code}**{steps}: {f.message}", icon=":material/stethoscope:"
        )
        if f.code == "not_enough_steps":
            continue
        with st.expander(f"{f.code}: evidence, fix and examples"):
            st.json(f.evidence, expanded=True)
            st.caption("Fix")
            st.code(f.fix, language=None, wrap_lines=True)
            for j, e in enumerate(f.examples):
                if e.get("eval"):
                    if st.button(f"Eval: question {e['prompt_id']}", key=f"finding_{i}_{j}"):
                        st.switch_page("app_pages/eval.py", query_params={"run": run_name, "question": e["prompt_id"]})
                elif st.button(
                    f"Rollout: prompt {e['prompt_id']} · step {e['step']} · sample {e['sample']}",
                    key=f"finding_{i}_{j}",
                ):
                    st.session_state.pop("focus", None)
                    st.switch_page(
                        "app_pages/rollouts.py",
                        query_params={
                            "run": run_name,
                            "prompt_id": e["prompt_id"],
                            "step": str(e["step"]),
                            "sample": str(e["sample"]),
                        },
                    )


def step_window(label: str, lo: int, hi: int, key: str) -> tuple[int | None, int | None]:
    """A steps slider over [lo, hi] that follows a live run: an end the user left at the run's edge
    moves with the edge as new steps arrive, an end the user moved stays where it was put. Returns
    (step_min, step_max) for the store's filters, None for an end at the edge (so that a live
    fragment keeps following it)."""
    edges, value = st.session_state.get(f"{key}_edges"), st.session_state.get(key)
    if value is None or edges is None:
        value = (lo, hi)
    else:
        start, end = value
        value = (lo if start == edges[0] else min(max(start, lo), hi), hi if end == edges[1] else min(max(end, lo), hi))
    st.session_state[f"{key}_edges"] = (lo, hi)
    if hi <= lo:
        st.session_state.pop(key, None)
        st.caption(f"{label}: every rollout so far is from step {lo}.")
        return None, None
    st.session_state[key] = value
    start, end = st.slider(label, lo, hi, key=key)
    return None if start == lo else start, None if end == hi else end


def step_bin(lo: int, hi: int) -> int:
    """How many steps one point of a prompt's curve (one heatmap column) stands for: 1, or more for a
    run longer than PROMPT_COLUMNS steps."""
    return max(1, -(-(hi - lo + 1) // PROMPT_COLUMNS))


def wanted_run() -> str | None:
    """The run the user is on: the one in the address (?run=, as the pages link), else this session's pick."""
    return st.query_params.get("run") or st.session_state.get("selected_run")


def pick_run(label: str = "Run", key: str = "run") -> dict | None:
    """A run picker shared by the pages (its choice follows the user from page to page)."""
    runs = all_runs()
    if not runs:
        st.info(
            "No runs yet. Start one on the **Launch** page, or from the command line: "
            "`python -m core.train --config configs/tiny_cpu.yaml`."
        )
        return None
    names = [r["name"] for r in runs]
    wanted = wanted_run()
    index = names.index(wanted) if wanted in names else 0
    if wanted and wanted not in names:  # a link to a run deleted since, or a name mistyped in the address
        st.warning(f"There is no run named {plain(wanted)} in the runs folder: showing {plain(names[0])}.")
    name = st.selectbox(label, names, index=index, key=key)
    st.session_state["selected_run"] = name
    st.query_params["run"] = name
    run = next(r for r in runs if r["name"] == name)
    if run["problem"]:
        st.warning(
            f"{'This run is unreadable: ' if run['state'] == 'unreadable' else ''}{plain(run['problem'])}. "
            "What can be read is shown below.",
            icon=":material/warning:",
        )
    return run


# A table whose rows open something: a row opens from its checkbox or from a click on any of its cells
# (a click on a cell alone selects the cell, and a row that opened only from its small checkbox looked dead).
ROW_CLICK = ["single-row", "single-cell"]


def clicked_row(event) -> int | None:
    """The position of the row a table's click (st.dataframe with ROW_CLICK) chose, by its checkbox or a cell."""
    rows = event.selection.rows or [cell[0] for cell in event.selection.cells]
    return rows[0] if rows else None


def is_live(run: dict) -> bool:
    return run["state"] in LIVE_STATES


def live_every(run: dict, seconds: float = LIVE_SECONDS) -> float | None:
    """`run_every` for st.fragment: refresh every `seconds` while the run is live, not after."""
    return seconds if is_live(run) else None


def progress(run: dict, seconds_per_step: float | None) -> tuple[float, str]:
    """The progress bar of a run: (fraction, text). While training: steps done, and the time left from
    the recent training steps' pace alone (model loading and evals do not count). In another phase:
    that phase, and its own progress where it has one (eval n/N)."""
    total, step = run["num_train_steps"] or 0, run["step"] or 0
    phase, done, of = run.get("phase"), run.get("phase_done"), run.get("phase_total")
    text = f"{run['state']} · step " + (f"{min(step, total)}/{total}" if total else f"{step} (of an unknown total)")
    if run["state"] not in LIVE_STATES:
        return (min(step, total) / total if total else 0.0), text
    if phase and phase != "training":
        text += f" · {phase}" + (f" {done}/{of}" if done is not None and of else "")
        return (done / of if done is not None and of else 0.0), text
    if seconds_per_step and total > step:
        text += f" · about {fmt_duration(seconds_per_step * (total - step))} left"
    return (min(step, total) / total if total else 0.0), text


SMOOTHING = 0.6  # TensorBoard's default
COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]  # D3's category10, distinct hues: a chart's curves, or Compare's runs, never two near-alike blues


def smoothing_slider() -> float:
    """The smoothing of the metric curves, as TensorBoard's: 0.6 at first, and the choice kept while the
    browser tab stays open (a widget's own state goes when its page is left)."""
    st.session_state.setdefault("smoothing_chosen", SMOOTHING)
    value = st.slider(
        "Smoothing of the metric curves",
        0.0,
        0.99,
        st.session_state["smoothing_chosen"],
        0.01,
        key="smoothing",
        help="An exponential moving average, as TensorBoard draws it (0.6 at first, "
        "as there); the raw values stay behind, faint. 0: the raw values alone.",
    )
    st.session_state["smoothing_chosen"] = value
    return value


X_AXES = {  # what the curves' x can be -> the axis title
    "step": "step",
    "minutes": "minutes since the run's first logged step",
    "fraction": "fraction of the run's training steps",
}


def x_axis_choice() -> str:
    """The metric charts' x axis, as TensorBoard offers it: steps, or wall-clock time since the start
    (kept while the tab stays open, as the smoothing)."""
    st.session_state.setdefault("x_axis_chosen", "step")
    offered = ["step", "minutes"]  # metric_series' own columns
    chosen = st.radio(
        "x axis",
        offered,
        index=offered.index(st.session_state["x_axis_chosen"]),
        format_func=lambda x: {"step": "step", "minutes": "relative time"}[x],
        horizontal=True,
        key="x_axis",
        help="Relative time: minutes since the run's first step, pauses included.",
    )
    st.session_state["x_axis_chosen"] = chosen
    return chosen


def curve_grid(
    curves: pd.DataFrame,
    titles: list[str],
    smoothing: float,
    x: str = "step",
    columns: int = 2,
    width: int = 380,
    height: int = 220,
):
    """Charts of curves, a panel each, `columns` a row, as one Vega-Lite chart. `curves` has the columns
    title (the panel, in `titles`' order), label (a curve: a metric or a run, a colour each), x and value.
    Each curve as TensorBoard draws it: smoothed, the raw values faint behind it in the same colour
    (smoothing 0: the raw values alone), markers on a short run only. Hovering a point marks its x on
    every panel, with each curve's value there (W&B's synced hover). Streamlit updates a Vega-Lite
    chart's data in place; a Plotly chart with new data is taken down and drawn anew, blank for a moment,
    at each live refresh. None when there is no curve."""
    import altair as alt

    if curves.empty:
        return None
    smoothed = curves.groupby(["title", "label"], sort=False)["value"].transform(
        lambda v: pd.Series(smooth(v.tolist(), smoothing), v.index)
    )
    # 12 significant digits: the average of a constant is that constant, not a wobble in its 16th digit
    curves = curves.assign(title=curves["title"].map(wrapped), smoothed=smoothed.map(lambda v: float(f"{v:.12g}")))
    labels = list(dict.fromkeys(curves["label"]))
    color = alt.Color(
        "label:N",
        title=None,
        scale=alt.Scale(domain=labels, range=[c for c, _ in zip(itertools.cycle(COLORS), labels)]),
        legend=alt.Legend(orient="bottom", labelLimit=0) if len(labels) > 1 else None,  # a run's whole name
    )
    hover = hover_on("x")
    base = alt.Chart().encode(x=alt.X("x:Q", title=X_AXES[x]), color=color)
    on_smoothed = base.encode(
        y=alt.Y("smoothed:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format=",.6~g"))
    )
    few = curves.groupby(["title", "label"])["x"].count().max() <= 100
    layers = [base.mark_line(opacity=0.25, strokeWidth=1).encode(y="value:Q")] if smoothing else []
    tooltip = [
        alt.Tooltip("label:N", title="curve"),
        alt.Tooltip("x:Q", title=X_AXES[x], format=",.4~f"),
        alt.Tooltip("smoothed:Q", title="smoothed" if smoothing else "value", format=",.4~g"),
        *([alt.Tooltip("value:Q", title="raw", format=",.4~g")] if smoothing else []),
    ]
    layers += [on_smoothed.mark_line(point=bool(few)), *hover_marks("x", on_smoothed, hover, tooltip)]
    header = alt.Header(
        title=None,
        labelExpr="split(datum.value, '\\n')",
        labelAnchor="start",
        labelAlign="left",
        labelFontSize=14,
        labelLimit=0,
    )
    return (
        alt.layer(*layers)
        .properties(width=width, height=height)
        .facet(
            alt.Facet("title:N", sort=[wrapped(t) for t in titles], header=header),
            data=curves,
            columns=columns,
        )
        .resolve_scale(y="independent")
    )


def hover_on(x: str):
    """The selection of a synced hover: the `x` nearest the pointer, nothing once the pointer leaves."""
    import altair as alt

    return alt.selection_point(
        name="hover", fields=[x], nearest=True, on="pointerover", clear="pointerout", empty=False
    )


def hover_marks(x: str, points, hover, tooltip) -> list:
    """The layers of a chart's synced hover: a rule at the hovered `x` and a dot on each of `points`
    there, and the points themselves, unseen, for the pointer to be nearest to (with `tooltip`).
    Charts that share `hover` (a selection on `x`) mark the same x together."""
    import altair as alt

    return [
        alt.Chart().mark_rule(color="gray").encode(x=f"{x}:Q").transform_filter(hover),
        points.mark_point(filled=True, size=60).transform_filter(hover),
        points.mark_point(opacity=0).encode(tooltip=tooltip).add_params(hover),
    ]


def wrapped(title: str) -> str:
    """A chart title over as many lines as it needs, never cut: about 45 characters a line."""
    return "\n".join(textwrap.wrap(title, 45))


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (weight 0: as is). A
    missing value (NaN: a step no reward scored) stays missing and leaves the average as it was."""
    out, average, seen = [], 0.0, 0
    for value in values:
        if value != value:
            out.append(value)
            continue
        seen += 1
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**seen) if weight else value)
    return out


def fmt_pct(value) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}%"  # None or NaN: not measured


def fmt_duration(seconds) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def fmt_time(stamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "–"


def show_completion(text: str | None, label: str = "Completion") -> None:
    """Model output as plain text (never HTML/markdown), with its last `Final:` line set apart; a
    record without one (a file written by hand) shows as empty."""
    text = text or ""
    body, sep, final = text.rpartition("Final:")
    if sep and "\n" not in final.strip():
        st.caption(label)
        if body.strip():
            st.code(body.rstrip(), language=None, wrap_lines=True)
        st.caption("Final line")
        st.code((sep + final).strip(), language=None)
    else:
        st.caption(f"{label} (no Final line)")
        st.code(text, language=None, wrap_lines=True)


STRONGEST_CHANGE = 1.0  # a change in log-probability this large (in nats: 2.7x likelier) gets the fullest colour


def show_tokens(tokens: list[dict]) -> None:
    """The completion's tokens inline, green where training made a token more likely and red where
    less (the stronger, the larger the change), each token's figures on hover. The model's text is
    escaped: it shows as text, never as markup."""
    spans = []
    for t in tokens:
        change = t["logprob_after"] - t["logprob_before"]
        alpha = min(1.0, abs(change) / STRONGEST_CHANGE)
        color = f"rgba(42,157,143,{alpha:.2f})" if change > 0 else f"rgba(230,57,70,{alpha:.2f})"
        tip = (
            f"token {t['token']!r} (id {t['id']}) · probability {math.exp(t['logprob_before']):.1%} -> "
            f"{math.exp(t['logprob_after']):.1%} · log-probability {t['logprob_before']:.3f} -> "
            f"{t['logprob_after']:.3f} ({change:+.3f}) · entropy {t['entropy_before']:.3f} -> {t['entropy_after']:.3f}"
        )
        spans.append(
            f'<span class="token" title="{html.escape(tip)}" data-id="{t["id"]}" '
            f'style="background:{color};border-radius:2px">{html.escape(t["token"]) or "&#8203;"}</span>'
        )
    st.html('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.8">' + "".join(spans) + "</div>")


def token_table(tokens: list[dict]):
    """One row per token: its figures before and after, and the likeliest tokens at its place."""
    import pandas as pd

    def top(pairs):
        return "  ".join(f"{token!r} {value:.2f}" for token, value in pairs)

    return pd.DataFrame(
        {
            "token": [repr(t["token"]) for t in tokens],
            "probability before": [math.exp(t["logprob_before"]) for t in tokens],
            "probability after": [math.exp(t["logprob_after"]) for t in tokens],
            "logprob before": [t["logprob_before"] for t in tokens],
            "logprob after": [t["logprob_after"] for t in tokens],
            "change": [t["logprob_after"] - t["logprob_before"] for t in tokens],
            "entropy before": [t["entropy_before"] for t in tokens],
            "entropy after": [t["entropy_after"] for t in tokens],
            "likeliest before": [top(t["top_before"]) for t in tokens],
            "likeliest after": [top(t["top_after"]) for t in tokens],
        }
    )
