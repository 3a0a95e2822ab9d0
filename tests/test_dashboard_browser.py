"""End to end in a real browser: Playwright drives Debian's Chromium against `streamlit run`.

Launch the tiny preset from the Launch form, wait for it to finish, read one of its completions
on Rollouts, see a chart on Prompts, and check that a completion holding `<script>` is shown as
text and never runs. Screenshots of every page visited go to test-artifacts/.
"""

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.rundir import read_status
from tests.conftest import CHROMIUM_MISSING, ROOT
from tests.dashboard_fixtures import make_runs

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=CHROMIUM_MISSING),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest_rollouts(run_dir: Path) -> list[dict]:
    """The run's rollouts in the Rollouts table's default order, newest first."""
    records = [
        json.loads(line) for f in sorted((run_dir / "rollouts").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    return sorted(records, key=lambda r: (-r["step"], r["rank"], r["prompt_id"], r["sample"]))


@contextlib.contextmanager
def browser_page(*flags: str, viewport: dict | None = None):
    """A page of Debian's Chromium, as this machine runs it (no sandbox, no GPU, nothing fetched in the
    background; `flags` added), a minute's patience for each wait; the browser closes after."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                *flags,
            ],
        )
        page = browser.new_page(**({"viewport": viewport} if viewport else {}))
        page.set_default_timeout(60_000)
        try:
            yield page
        except Exception:  # what the page showed when the test failed, for whoever reads CI's log
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"\W+", "_", os.environ.get("PYTEST_CURRENT_TEST", "test")).strip("_")
            try:
                page.screenshot(path=str(ARTIFACTS / f"failed_{name}.png"), full_page=True)
                print(f"the page when it failed: {ARTIFACTS / f'failed_{name}.png'}")
            except Exception:  # the test's own error is the one to report
                pass
            raise
        finally:
            browser.close()


# The page has finished running its script (Streamlit marks its root element so) and each of its Vega-Lite
# charts has drawn its marks (a chart's box is there before Vega's own element is).
SETTLED = """() => document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === 'notRunning'
    && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(c => c.querySelector('.marks'))"""


def settled(page, timeout: float | None = None) -> None:
    """Wait until the page has run its script and drawn its charts: what a screenshot should show."""
    page.wait_for_function(SETTLED, timeout=timeout)


def charts_drawn(page, count: int) -> None:
    """Wait until the page has drawn `count` Vega charts. Each chart, once drawn, pushes what is below it
    down the page. On Rewards the replay's form moves 1,150 px, after its title is already shown. A list
    opened from a control that then moved stays outside the window (docs/measured.md, "The test suite")."""
    page.wait_for_function(f"() => document.querySelectorAll('.vega-embed .marks').length >= {count}")


def click_row(page, row: int, table: int = 0, on_text: bool = True) -> None:
    """Click row `row` (0 = the first) of the page's table `table` (0 = the first), on the text of one of
    its cells as a person does (`on_text`), or on its selection checkbox: the grid is a canvas. It waits
    for the row's cells, which the grid also writes into a table for screen readers, as it draws them."""
    grid = page.locator('[data-testid="stDataFrame"]').nth(table)
    grid.locator(f'[data-testid="glide-cell-1-{row}"]').wait_for(state="attached")
    box = grid.bounding_box()
    x = box["x"] + (min(160, box["width"] / 2) if on_text else 16)  # the checkbox is the row's first 32 px
    page.mouse.click(x, box["y"] + 35 + 35 * row + 17)  # header 35 px, then rows of 35 px


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    runs = tmp_path / "runs"
    make_runs(runs)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard/app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env={**os.environ, "RUNS_DIR": str(runs)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "streamlit did not start"
            time.sleep(0.5)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=30)
    for status in runs.glob("*/status.json"):  # never leave a launched run behind
        pid = read_status(status.parent).get("pid")
        if pid and read_status(status.parent).get("state") in ("starting", "running"):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_launch_watch_and_read_in_a_real_browser(server):
    import core.tokens

    url, runs = server
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(viewport={"width": 1500, "height": 1100}) as page:
        elsewhere = []  # requests to anywhere but this server: offline they fail (the tab icon once did)
        page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)

        def shot(name, failed=False):
            if failed:  # a page broken by the failure may never settle: its shot all the same, within 5 s
                with contextlib.suppress(playwright.TimeoutError):
                    settled(page, timeout=5_000)
            else:
                settled(page)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

        try:
            page.goto(f"{url}/")
            page.get_by_text("Watch a model learn in minutes").wait_for()
            shot("home")

            page.goto(f"{url}/launch")
            page.get_by_text("Launch a run").first.wait_for()
            page.get_by_role("combobox", name="Start from").click()
            page.get_by_role("option", name="tiny_cpu.yaml").click()
            page.get_by_role("textbox", name="Run name").fill("e2e_run")
            steps = page.get_by_role("spinbutton", name="Training steps")
            steps.fill("3")
            steps.press("Tab")
            shot("launch")
            page.get_by_role("button", name="Launch", exact=True).click()

            page.get_by_text("finished · step 3/3").wait_for(timeout=300_000)
            assert read_status(runs / "e2e_run")["state"] == "finished"
            shot("runs")

            # click a row (the grid is a canvas: its selection checkbox, by position): that rollout opens at once
            second = newest_rollouts(runs / "e2e_run")[1]
            page.goto(f"{url}/rollouts?run=e2e_run")
            grid = page.locator('[data-testid="stDataFrame"]').first
            grid.wait_for()
            click_row(page, 1)
            page.get_by_text(
                f"Prompt {second['prompt_id']} · step {second['step']} · sample {second['sample']}", exact=True
            ).wait_for(timeout=20_000)
            shot("rollouts_clicked")

            first = json.loads((runs / "e2e_run" / "rollouts" / "rollouts.jsonl").read_text().splitlines()[0])
            page.goto(f"{url}/rollouts?run=e2e_run&prompt_id={first['prompt_id']}&step=1")
            page.get_by_text(f"Prompt {first['prompt_id']} · step 1 · sample 0").wait_for()
            first_line = first["completion"].strip().splitlines()[0]
            page.locator("code").filter(has_text=first_line).first.wait_for()  # the completion, as text
            shot("rollouts")

            # its token view: each token's figures, as `python -m core.tokens` gives them
            page.get_by_text("What training did to each token").click()
            page.locator("span.token").first.wait_for(timeout=120_000)
            # the command's main() in this process (its own start is test_tokens'): a fresh interpreter's imports saved
            with contextlib.redirect_stdout(io.StringIO()) as out:
                assert (
                    core.tokens.main(
                        [
                            str(runs / "e2e_run"),
                            "--step",
                            "1",
                            "--prompt-id",
                            first["prompt_id"],
                            "--sample",
                            "0",
                            "--json",
                        ]
                    )
                    == 0
                )
            tokens = json.loads(out.getvalue())
            titles = page.locator("span.token").evaluate_all("spans => spans.map(s => s.title)")
            assert len(titles) == len(tokens)
            for title, t in zip(titles, tokens):
                assert f"log-probability {t['logprob_before']:.3f} -> {t['logprob_after']:.3f}" in title, (title, t)
            shot("rollouts_tokens")

            page.goto(f"{url}/prompts?run=e2e_run")
            page.locator(".vega-embed").first.wait_for()
            shot("prompts")

            page.goto(f"{url}/rollouts?run=html&prompt_id=xss&step=1")
            page.locator("code").filter(has_text="<script>window.__xss = 1</script>").first.wait_for()
            page.wait_for_load_state("networkidle")  # an <img src=x> would have failed to load by now
            assert page.locator("img[src='x']").count() == 0 and page.evaluate("typeof window.__xss") == "undefined"
            shot("rollouts_html")

            for name in ("rewards", "eval", "compare"):
                page.goto(f"{url}/{name}?run=learning")
                page.wait_for_load_state("networkidle")
                shot(name)

            # Eval: the flipped questions are a table; a click opens both completions side by side
            page.goto(f"{url}/eval?run=learning")
            page.get_by_text("Click a row to read its completions").wait_for()
            click_row(page, 0, table=1)  # the first table lists the run's other evaluations
            page.get_by_text("Before training", exact=True).wait_for(timeout=20_000)
            page.get_by_text("After training", exact=True).wait_for()
            page.locator("code").filter(has_text="Final: 2").first.wait_for()  # e1: wrong before, 2 after
            shot("eval_flip_opened")

            # Delete: the popover closes after acting, says what happened, and nothing else is touched
            page.goto(f"{url}/runs?run=crashed")
            page.get_by_role("button", name="Delete").click()
            page.get_by_role("button", name="Yes, delete it").click()
            page.get_by_text("Deleted crashed.").wait_for()
            page.wait_for_timeout(1000)
            assert not page.get_by_role("button", name="Yes, delete it").is_visible()
            shot("runs_after_delete")
            assert sorted(p.name for p in runs.iterdir()) == ["e2e_run", "html", "learning"]
            assert not elsewhere, elsewhere
        except Exception:
            shot("failure", failed=True)
            for name in ("", "launch", "runs", "rollouts", "rewards", "prompts", "eval", "compare"):
                page.goto(f"{url}/{name}?run=e2e_run")  # every page, as it looked when the test failed
                shot(f"failure_{name or 'home'}", failed=True)
            raise


def test_a_page_under_a_foreign_name_cannot_drive_the_dashboard(server):
    # DNS rebinding: a site's name made to resolve to this machine. Chromium sends Host: evil.example.
    url, runs = server
    port = url.rsplit(":", 1)[1]
    with browser_page("--host-resolver-rules=MAP evil.example 127.0.0.1") as page:
        page.goto(f"http://evil.example:{port}/launch")
        page.get_by_text("This dashboard answers only to localhost").wait_for()
        assert page.get_by_text("Launch a run").count() == 0  # no form to drive
        page.goto(f"{url}/launch")  # the same server under its own name works
        page.get_by_text("Launch a run").first.wait_for()
    assert sorted(p.name for p in runs.iterdir()) == ["crashed", "html", "learning"]


def test_rollouts_opened_before_a_runs_first_rollout_shows_them_as_they_come(server):
    """A live run still loading (SmolLM2's eval before training takes minutes): Rollouts opened then says it
    has none yet, and shows the first ones by itself once the trainer writes them, without a reload."""
    from core.runstate import process_identity
    from tests.dashboard_fixtures import write_config, write_status
    from tests.fake_run import write_run

    url, runs = server
    (runs / "fresh").mkdir()
    write_config(runs / "fresh")
    write_status(
        runs / "fresh",
        state="running",
        **process_identity(os.getpid()),
        ended_at=None,
        global_step=0,
        max_steps=30,
        phase="eval before",
    )
    with browser_page() as page:
        page.goto(f"{url}/rollouts?run=fresh")
        page.get_by_text("This run has no rollouts yet").wait_for()
        write_run(runs / "fresh", 128, ranks=2, prompts=20, ramp=20)  # step 1, as the trainer appends it
        page.get_by_text("128 rollouts match").wait_for(timeout=30_000)  # the page's own refresh, no reload


def test_a_live_run_shows_new_steps_as_they_arrive(server):
    # the trainer appends rollouts of new steps; the Rollouts page, left at its defaults, shows them
    from core.runstate import process_identity
    from tests.dashboard_fixtures import write_status
    from tests.fake_run import write_run

    url, runs = server
    ARTIFACTS.mkdir(exist_ok=True)
    write_status(
        runs / "learning",
        state="running",
        **process_identity(os.getpid()),
        ended_at=None,
        global_step=8,
        max_steps=30,
    )
    with browser_page() as page:
        page.goto(f"{url}/rollouts?run=learning")
        page.get_by_text("1,024 rollouts match").wait_for()
        write_run(runs / "learning", 256, ranks=2, start=1024, prompts=20, ramp=20)  # steps 9 and 10
        page.get_by_text("1,280 rollouts match").wait_for(timeout=30_000)  # by the page's own live refresh
        # a click while new rows arrive: the page just refreshed (5 s to the next); step 11 lands on
        # the server and the second row shown is clicked before the browser sees the new rows
        second = newest_rollouts(runs / "learning")[1]
        write_run(runs / "learning", 128, ranks=2, start=1280, prompts=20, ramp=20)  # step 11
        click_row(page, 1)
        page.get_by_text(
            f"Prompt {second['prompt_id']} · step {second['step']} · sample {second['sample']}", exact=True
        ).wait_for(timeout=20_000)  # what was clicked is what opens
        opened = f"prompt {second['prompt_id']} · step {second['step']} · sample {second['sample']}"
        page.get_by_text(f"Opened {opened}: below the table").wait_for()  # an answer where the eye is
        page.get_by_text("1,408 rollouts match").wait_for(timeout=30_000)
        # step 11's 128 rows pushed the open row off the first page: the page says it is still open below
        page.get_by_text(f"▶ Open below: {opened} (not on this page now)").wait_for()
        page.get_by_role("button", name="next ▶").click()  # the second page, found by key
        page.get_by_text("rows 26–50").wait_for()

        page.goto(f"{url}/rewards?run=learning")
        page.get_by_text("Steps 1–11").wait_for()
        write_run(runs / "learning", 128, ranks=2, start=1408, prompts=20, ramp=20)  # step 12
        page.get_by_text("Steps 1–12").wait_for(timeout=30_000)  # the window follows

        page.goto(f"{url}/runs?run=learning")
        page.get_by_text("running · step 8/30").wait_for()
        write_status(
            runs / "learning",
            state="running",
            **process_identity(os.getpid()),
            ended_at=None,
            global_step=11,
            max_steps=30,
        )  # as the trainer does after each step
        page.get_by_text("running · step 11/30").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "runs_live.png"), full_page=True)


def test_a_trl_run_opens_read_only_in_a_real_browser(server, tiny_model_dir):
    # a folder TRL's own GRPOTrainer wrote: listed, its metrics drawn, a clicked rollout opened, no controls
    from core.store import RunStore
    from tests.test_trl_runs import trl_run

    url, runs = server
    trl_run(tiny_model_dir, runs / "trl_plain", [f"{a} + {a + 2} =" for a in range(1, 9)], 3, "steps")
    store = RunStore(runs / "trl_plain")
    store.refresh()
    second = store.rollouts_page(limit=2)[0].iloc[1]  # the table's second row, newest first
    with browser_page(viewport={"width": 1500, "height": 1100}) as page:
        page.goto(f"{url}/runs?run=trl_plain")
        page.get_by_text("trl_plain is a TRL run: this dashboard did not start it").wait_for()
        page.get_by_text("Mean reward (TRL's reward)").first.wait_for()
        assert page.get_by_role("button", name="Stop").count() == 0
        assert page.get_by_role("button", name="Delete").count() == 0
        page.screenshot(path=str(ARTIFACTS / "trl_run.png"), full_page=True)
        page.goto(f"{url}/rollouts?run=trl_plain")
        click_row(page, 1, on_text=False)  # by its checkbox, as well
        page.get_by_text(
            f"Prompt {second['prompt_id']} · step {second['step']} · sample {second['sample']}", exact=True
        ).wait_for(timeout=20_000)
        page.get_by_text("The advantage TRL logged for each sample").wait_for()
        page.screenshot(path=str(ARTIFACTS / "trl_rollout.png"), full_page=True)
    assert (runs / "trl_plain" / "trainer_state.json").is_file()  # nothing of it touched


# Every animation frame, the page's charts (Vega-Lite and Plotly), each numbered the first time it is
# seen: a chart that is taken down and put up anew at a refresh (blank for a moment) gets a new number.
WATCH_CHARTS = """() => { window.chartFrames = []; const ids = new WeakMap(); let next = 0; const look = () => {
    const charts = [...document.querySelectorAll('.vega-embed svg.marks, .js-plotly-plot')];
    charts.forEach(c => { if (!ids.has(c)) ids.set(c, next++); });
    window.chartFrames.push(charts.map(c => ids.get(c)));
    requestAnimationFrame(look); }; look(); }"""
FIRST_CURVE = "() => document.querySelector('.vega-embed .mark-line path').getAttribute('d')"


def more_metrics(run_dir):  # three more steps, as the trainer logs them
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.writelines(
            json.dumps({"step": s, "time": 1.8e9 + s, "reward": 0.8, "loss": 0.1 / s}) + "\n" for s in range(31, 34)
        )


def more_rollouts(run_dir):  # a ninth step of 128 rollouts, as the trainer writes them
    from tests.fake_run import write_run

    write_run(run_dir, 128, ranks=2, start=1024, prompts=20, ramp=20)


@pytest.mark.parametrize(
    "path, title, grow, panels",
    [
        ("runs", "Mean reward (TRL's reward)", more_metrics, 3),
        ("rewards", "Reward categories per step", more_rollouts, 3),
        ("prompts", "Accuracy per step", more_rollouts, 1),
    ],
)
def test_charts_are_redrawn_in_place_and_hover_marks_every_chart(server, path, title, grow, panels):
    """A live run's charts take new steps without being taken down (never blank, not drawn anew), and
    hovering a step on one chart marks it on every chart of the grid, as W&B does."""
    from core.runstate import process_identity
    from tests.dashboard_fixtures import write_status

    url, runs = server
    write_status(
        runs / "learning",
        state="running",
        **process_identity(os.getpid()),
        ended_at=None,
        global_step=30,
        max_steps=60,
    )
    with browser_page(viewport={"width": 1500, "height": 1000}) as page:
        page.goto(f"{url}/{path}?run=learning")
        page.get_by_text(title).first.wait_for()
        settled(page)  # its script run and every chart drawn: the curve to compare with
        before = page.evaluate(FIRST_CURVE)
        page.evaluate(WATCH_CHARTS)
        grow(runs / "learning")
        page.wait_for_function(f"() => ({FIRST_CURVE})() !== {json.dumps(before)}", timeout=40_000)
        page.wait_for_timeout(1000)
        frames = page.evaluate("window.chartFrames")

        grid = page.locator(".vega-embed").first  # the key charts: one Vega-Lite chart, a panel each
        marked = (
            "() => [...document.querySelector('.vega-embed').querySelectorAll('g.mark-rule.role-mark')].map("
            "rule => rule.querySelectorAll('line').length)"
        )  # a rule layer per panel: its lines shown
        unmarked = page.evaluate(marked)
        panel = grid.locator("g.mark-path.role-mark").first.bounding_box()  # the first panel's plot
        page.mouse.move(panel["x"] + panel["width"] * 0.6, panel["y"] + panel["height"] / 2)
        with contextlib.suppress(playwright.TimeoutError):  # every panel's rule drawn; the assert below says if not
            page.wait_for_function(f"() => ({marked})().every(lines => lines > 0)", timeout=10_000)
        hovered = page.evaluate(marked)
        page.screenshot(path=str(ARTIFACTS / f"{path}_hover.png"), full_page=True)
    assert len(frames) > 100 and frames[0], frames[:3]
    changed = [(i, frame) for i, frame in enumerate(frames) if frame != frames[0]]
    assert not changed, (
        f"in {len(changed)} of {len(frames)} frames the charts were not the ones first drawn: {changed[:3]}"
    )
    assert len(unmarked) >= panels and not any(unmarked), unmarked
    assert all(hovered), hovered  # the hovered step, on every chart of the grid


@pytest.mark.parametrize("steps", [30, 360], ids=["a point a step", "a point for 3 steps"])
def test_a_click_on_a_prompts_curve_opens_that_prompt_at_that_step(server, steps):
    """Prompts: clicking a point of a prompt's accuracy curve opens Rollouts on that prompt at that step; on a
    run long enough that a point stands for several steps, at the prompt's first group among them."""
    from tests.dashboard_fixtures import write_config, write_status
    from tests.fake_run import write_run

    url, runs = server
    name = "learning"
    if steps > 30:  # 360 steps: a curve's point per 3 steps (widgets.PROMPT_COLUMNS)
        name = "long"
        write_run(runs / name, 360 * 16 * 8, ranks=1, prompts=40, ramp=300)
        write_config(runs / name)
        write_status(runs / name, state="finished", exit_code=0, pid=1, global_step=360, max_steps=360)
    with browser_page(viewport={"width": 1500, "height": 1000}) as page:
        page.goto(f"{url}/prompts?run={name}")
        curves = page.locator(".vega-embed").first
        curves.locator("g.mark-symbol.role-mark path").first.wait_for()
        points = curves.locator("g.mark-symbol.role-mark path[aria-label]")  # "step: 4; accuracy: 0.375; prompt: ..."
        labels = points.evaluate_all("points => points.map(p => p.getAttribute('aria-label'))")
        seen = [label for label in labels if label.count(": ") == 3]  # the points drawn (the others take the pointer)
        where = [label.rsplit("; prompt: ", 1)[0] for label in seen]
        alone = labels.index(
            next(
                label
                for label, at in zip(seen, where)  # a point no other curve shares, late on
                if where.count(at) == 1 and not label.startswith(("step: 1;", "step: 2;"))
            )
        )
        fields = dict(part.split(": ") for part in labels[alone].split("; "))
        start, width = int(fields["step"].replace(",", "")), 1 if steps == 30 else 3
        records = [json.loads(line) for line in (runs / name / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
        first = min(
            r["step"] for r in records if r["prompt_id"] == fields["prompt"] and start <= r["step"] < start + width
        )
        box = points.nth(alone).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.get_by_text(f"Prompt {fields['prompt']} · step {first} · sample 0", exact=True).wait_for()
        assert "/rollouts?" in page.url


def test_check_before_launch_and_try_another_reward_in_a_real_browser(server):
    """Launch's "Check before launch" shows the pre-flight's verdict; Rewards' "Try another reward" replays a
    reward, and a click on a changed row opens that rollout on Rollouts."""
    from core.replay import reward_specs, run_replay

    url, runs = server
    ARTIFACTS.mkdir(exist_ok=True)
    changed = run_replay(runs / "learning", reward_specs(["gsm8k_lenient", "format"], [1.0, 0.5])).changed_rows
    with browser_page(viewport={"width": 1500, "height": 1100}) as page:
        page.goto(f"{url}/launch")
        page.get_by_role("combobox", name="Start from").click()
        page.get_by_role("option", name="demo_cpu.yaml").click()
        page.get_by_role("button", name="Check before launch").click()
        page.get_by_text("A learning signal is expected").wait_for(timeout=300_000)
        page.get_by_text("Peak memory").wait_for()
        page.screenshot(path=str(ARTIFACTS / "launch_preflight.png"), full_page=True)
        assert sorted(p.name for p in runs.iterdir()) == ["crashed", "html", "learning"]  # nothing launched

        page.goto(f"{url}/rewards?run=learning")
        page.get_by_text("Try another reward").wait_for()
        charts_drawn(page, 2)  # the form below them stays where it is
        page.get_by_role("textbox", name="Weights, in the same order").fill("1, 0.5")
        page.get_by_role("combobox", name="Rewards").click()
        page.get_by_role("option", name="format", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Remove format", exact=True).wait_for()  # its chip, beside gsm8k_lenient's
        page.get_by_role("button", name="Replay").click()
        page.get_by_text("Samples whose reward changed").wait_for(timeout=60_000)
        page.get_by_text("click a row to open the rollout on Rollouts").scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "rewards_replay.png"), full_page=True)
        click_row(page, 0)
        first = changed[0]
        page.get_by_text(
            f"Prompt {first['prompt_id']} · step {first['step']} · sample {first['sample']}", exact=True
        ).wait_for(timeout=20_000)
        assert "/rollouts?" in page.url
