"""The dashboard following a live run of a million rollouts, in a real browser.

    python -m tests.benchmarks.bench_live [--rollouts 1000000] [--rounds 10]

Makes a running fixture run of N rollouts in a temporary runs folder (its status.json names this
process, so the dashboard sees it live), starts `streamlit run`, and opens Runs, Rollouts and Prompts
in Playwright + Debian's Chromium. Then, like the trainer, it appends a step of rollouts and rewrites
status.json every 2 seconds, and prints: how long until the new rows show on the page, the server's
CPU seconds per 2-second refresh with and without the status rewrites, its resident memory, how
long each page takes to draw (the first visit reads the run), and how long a text search typed on
Rollouts takes, the first time and while the run goes on. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from core import REPO as ROOT
from core.config import load_config
from core.rundir import write_json_atomic
from core.runstate import process_identity
from tests.fake_run import write_run

CHROMIUM = "/usr/bin/chromium"
STEP = 128  # rollouts per step in fake_run (16 groups of K=8)


def make_live_run(run_dir: Path, n: int) -> None:
    import yaml

    write_run(run_dir, n, ranks=2)
    steps = n // STEP
    config = load_config(ROOT / "configs" / "tiny_cpu.yaml").to_dict()
    config["train"].update(output_dir=str(run_dir), num_train_steps=steps * 2)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "time": time.time() - steps + s, "loss": 1 / s, "reward": 0.5}) + "\n"
            for s in range(1, steps + 1)
        )
    )
    write_status(run_dir, steps)


def write_status(run_dir: Path, step: int) -> None:
    """status.json as the trainer writes it each step: this process is the run's (a proven pid)."""
    write_json_atomic(
        run_dir / "status.json",
        {
            "state": "running",
            **process_identity(os.getpid()),
            "started_at": time.time() - 3600,
            "global_step": step,
            "max_steps": step * 2,
            "phase": "training",
        },
    )


def start_server(runs: Path, port: int) -> subprocess.Popen:
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
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("streamlit did not start") from None
            time.sleep(0.5)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10, help="2-second trainer steps in each live phase")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    runs, name = tmp / "runs", "live"
    run_dir = runs / name
    started = time.time()
    print(f"writing a live run of {args.rollouts:,} rollouts to {run_dir} ...", flush=True)
    make_live_run(run_dir, args.rollouts)
    make_live_run(runs / "small", 1024)  # the same pages over a run of 1,024 rollouts: what a page costs at any size
    print(
        f"  {time.time() - started:.0f} s, "
        f"{sum(p.stat().st_size for p in (run_dir / 'rollouts').iterdir()) / 2**20:,.0f} MiB\n",
        flush=True,
    )
    server = start_server(runs, args.port)
    ps = psutil.Process(server.pid)
    url = f"http://127.0.0.1:{args.port}"
    rows, rss = [], []
    written = args.rollouts
    step = written // STEP

    def append(status: bool) -> None:
        nonlocal written, step
        write_run(run_dir, STEP, ranks=2, start=written)
        written, step = written + STEP, step + 1
        if status:
            write_status(run_dir, step)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(300_000)
            pages = {  # page: what shows once it has drawn
                "runs": lambda: page.get_by_text(f"running · step {step}/").first.wait_for(),
                "rollouts": lambda: page.get_by_text(f"{written:,} rollouts match").wait_for(),
                "prompts": lambda: page.locator(".vega-embed").first.wait_for(),
            }
            page.goto(f"{url}/")  # the server's own first start (its imports) is not a page's time
            page.get_by_text("Watch a model learn").first.wait_for()
            for visit in ("first visit (reads the run)", "second visit"):
                for path, drawn in pages.items():  # a page loaded by its address: the browser starts the app
                    start = time.perf_counter()
                    page.goto(f"{url}/{path}?run={name}")
                    drawn()
                    rows.append((f"{path} page by its address, {visit}", f"{time.perf_counter() - start:.2f} s"))
                    rss.append(ps.memory_info().rss)
            small = {
                "runs": lambda: page.get_by_text("running · step 8/").first.wait_for(),
                "rollouts": lambda: page.get_by_text("1,024 rollouts match").wait_for(),
                "prompts": pages["prompts"],
            }
            for path in pages:  # as a user moves between pages: a click in the sidebar, from a page just opened
                for run, drawn in ((name, pages[path]), ("small", small[path])):
                    took = []
                    for _ in range(3):
                        page.goto(f"{url}/eval?run={run}")  # it picks the run and draws none of the others' marks
                        page.get_by_text("No eval results yet").first.wait_for()
                        page.get_by_test_id("stStatusWidget").wait_for(state="hidden")  # its script has ended
                        page.wait_for_timeout(500)
                        start = time.perf_counter()
                        page.get_by_role("link", name=path.capitalize()).click()
                        drawn()
                        took.append(time.perf_counter() - start)
                    rows.append(
                        (
                            f"{path} page from the sidebar, {'1,024 rollouts' if run == 'small' else f'{args.rollouts:,} rollouts'}",
                            f"{sorted(took)[1]:.2f} s median of 3, {max(took):.2f} s max",
                        )
                    )

            for path, status in (("rollouts", True), ("rollouts", False), ("runs", True)):
                write_status(run_dir, step)
                page.goto(f"{url}/{path}?run={name}")
                pages[path]()
                page.wait_for_timeout(3000)
                cpu, waits = cpu_seconds(ps), []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    append(status)
                    pages[path]()  # by the page's own 2-second refresh: the new rows, the new step
                    waits.append(time.perf_counter() - start)
                    page.wait_for_timeout(max(0, 2000 - 1000 * waits[-1]))
                    rss.append(ps.memory_info().rss)
                per_refresh = (cpu_seconds(ps) - cpu) / args.rounds
                what = f"{path} page, a step every 2 s{' + status.json rewrite' if status else ''}"
                rows.append(
                    (
                        f"{what}: new rows visible after",
                        f"{sorted(waits)[len(waits) // 2]:.2f} s median, {max(waits):.2f} s max",
                    )
                )
                rows.append((f"{what}: server CPU per refresh", f"{per_refresh:.2f} s"))

            # A text search, typed as a user does: the first time it reads every completion, then its
            # matches are kept (core/store/search.py) and a live run's refreshes search only the new rows.
            page.goto(f"{url}/rollouts?run={name}")
            pages["rollouts"]()
            count = page.get_by_text(re.compile(r"^[\d,]+ rollouts match")).first
            box = page.get_by_label("Search question and completion text")
            for text in ("so the total", "answer", "Apples"):
                before = count.inner_text()
                start = time.perf_counter()
                box.fill(text)
                box.press("Enter")
                expect(count).not_to_have_text(before, timeout=300_000)
                rows.append(
                    (
                        f"rollouts page: a new search (`{text}`), the matches shown after",
                        f"{time.perf_counter() - start:.2f} s",
                    )
                )
            page.wait_for_timeout(3000)
            cpu, waits = cpu_seconds(ps), []
            for _ in range(args.rounds):  # `Apples` is in nearly every completion: each step adds matches
                before = count.inner_text()
                start = time.perf_counter()
                append(True)
                expect(count).not_to_have_text(before, timeout=300_000)
                waits.append(time.perf_counter() - start)
                page.wait_for_timeout(max(0, 2000 - 1000 * waits[-1]))
                rss.append(ps.memory_info().rss)
            rows.append(
                (
                    "rollouts page, searching `Apples`, a step every 2 s: new matches visible after",
                    f"{sorted(waits)[len(waits) // 2]:.2f} s median, {max(waits):.2f} s max",
                )
            )
            rows.append(
                (
                    "rollouts page, searching `Apples`: server CPU per refresh",
                    f"{(cpu_seconds(ps) - cpu) / args.rounds:.2f} s",
                )
            )
            browser.close()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import sys; from core.runs import list_runs; list_runs(sys.argv[1])", str(runs)],
            cwd=ROOT,
            check=True,
        )
        rows.append(("list_runs() in a new process (imports included)", f"{time.perf_counter() - start:.2f} s"))
        rows.append(
            (
                "server RSS",
                f"{max(rss) / 2**20:,.0f} MB peak, {rss[-1] / 2**20:,.0f} MB at the end ({written:,} rollouts)",
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    width = max(len(r[0]) for r in rows)
    print(f"machine: {os.cpu_count()} cores; {written:,} rollouts at the end")
    for what, figure in rows:
        print(f"{what:<{width}}  {figure}")


if __name__ == "__main__":
    main()
