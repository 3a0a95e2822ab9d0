"""Does watching a run slow it down? The demo alone, then the same demo watched in Chromium.

    python -m tests.benchmarks.bench_watch [--steps 400] [--pairs 4] [--walk runs,rollouts,rewards,prompts,eval,launch]

Runs the CPU demo preset (configs/demo_cpu.yaml, shortened to --steps training steps) in pairs
(--pairs), each run in a runs folder of its own, one after the other on this machine: once with
nothing else running, once launched the way the Home page launches it while `streamlit run` serves
the dashboard and Playwright drives Debian's Chromium through the pages a newcomer visits (--walk: the
first by its address, the others by a click in the sidebar; --dwell seconds on each, a screenshot on
each). It prints both wall times and their ratio, and the CPU seconds the trainer, the dashboard's
server and the browser used in each; with several pairs, the order alternates (an even count balances
it) and it prints the median of their ratios. Nothing here asserts a timing: the figure is the ratio,
taken on one machine in one run (docs/measured.md names the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from core import REPO as ROOT
from core.config import load_config
from core.rundir import read_status
from core.runs import launch
from core.runstate import LIVE_STATES
from tests.benchmarks.bench_live import CHROMIUM, start_server

PAGES = {  # address: what shows once the page has drawn
    "runs": "Smoothing of the metric curves",
    "rollouts": "rollouts match",
    "rewards": "Rewards",
    "prompts": "Prompts",
    "eval": "Eval",
    "launch": "Launch",
    "": "Watch a model learn",
}


class CpuMeter:
    """CPU seconds used by a set of processes and their children, sampled as they live (a process that
    ended keeps what it last showed)."""

    def __init__(self, *pids: int, names: tuple[str, ...] = ()):
        self.roots = [psutil.Process(pid) for pid in pids]
        self.names = names  # only processes with one of these in their name (all when empty)
        self.seen: dict[int, float] = {}

    def sample(self) -> float:
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    if self.names and not any(n in proc.name() for n in self.names):
                        continue
                    times = proc.cpu_times()
                    self.seen[proc.pid] = max(self.seen.get(proc.pid, 0.0), times.user + times.system)
                except psutil.NoSuchProcess:
                    pass
        return sum(self.seen.values())


def run_config(steps: int) -> dict:
    config = load_config(ROOT / "configs" / "demo_cpu.yaml").to_dict()
    config["train"]["num_train_steps"] = steps
    return config


def wait_done(run_dir: Path, on_tick=None) -> float:
    """Wall seconds of the run, from its launch to its final state."""
    start = time.time()
    while read_status(run_dir).get("state") in (*LIVE_STATES, None):
        if on_tick:
            on_tick()
        time.sleep(0.5)
    status = read_status(run_dir)
    if status.get("state") != "finished":
        raise SystemExit(f"{run_dir.name} ended {status.get('state')}: {status.get('error')}")
    return time.time() - start


def trainer_meter(run_dir: Path) -> CpuMeter | None:
    pid = read_status(run_dir).get("pid")
    try:
        return CpuMeter(pid) if pid else None
    except psutil.NoSuchProcess:
        return None


def trainer_cpu(meter: CpuMeter | None) -> float:
    return meter.sample() if meter else float("nan")


def start_demo(config: dict, runs: Path, name: str) -> tuple[Path, CpuMeter | None]:
    """The demo launched as Home launches it, and a meter on its trainer's CPU."""
    run_dir = launch(config, runs, name, repo=ROOT)
    time.sleep(1)
    return run_dir, trainer_meter(run_dir)


def run_alone(config: dict, runs: Path, name: str) -> tuple[float, float]:
    """Wall and trainer CPU seconds of the demo with no dashboard open."""
    run_dir, meter = start_demo(config, runs, name)
    return wait_done(run_dir, meter.sample if meter else None), trainer_cpu(meter)


def run_watched(config: dict, runs: Path, name: str, args, walk: list[str], shots: Path) -> dict:
    """Wall and CPU seconds of the demo launched as Home launches it while Chromium walks the pages."""
    from playwright.sync_api import sync_playwright

    runs.mkdir(parents=True, exist_ok=True)  # the server lists it before the run is launched into it
    server = start_server(runs, args.port)
    server_meter = CpuMeter(server.pid)
    url = f"http://127.0.0.1:{args.port}"
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
            browser_meter = CpuMeter(os.getpid(), names=("chrom", "node"))  # Playwright's driver and Chromium
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/")
            page.get_by_text(PAGES[""]).first.wait_for()
            server_cpu, browser_cpu = server_meter.sample(), browser_meter.sample()
            run_dir, meter = start_demo(config, runs, name)
            visits, last = 0, 0.0

            def tick() -> None:
                nonlocal visits, last
                if meter:
                    meter.sample()
                server_meter.sample()
                browser_meter.sample()
                if time.time() - last >= args.dwell:
                    page_name = walk[visits % len(walk)]
                    if visits == 0:  # the first page by its address, the others from the sidebar, as a user moves
                        page.goto(f"{url}/{page_name}?run={name}")
                    else:
                        page.get_by_role("link", name=page_name.capitalize() or "Home").click()
                    page.get_by_text(PAGES[page_name]).first.wait_for()
                    page.wait_for_timeout(2000)
                    page.screenshot(path=str(shots / f"{name}-{visits:03d}-{page_name}.png"))
                    visits, last = visits + 1, time.time()

            wall = wait_done(run_dir, tick)
            server_cpu, browser_cpu = server_meter.sample() - server_cpu, browser_meter.sample() - browser_cpu
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"wall": wall, "trainer": trainer_cpu(meter), "server": server_cpu, "browser": browser_cpu, "visits": visits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps of the demo (700 in the preset)")
    parser.add_argument(
        "--walk",
        default="runs,rollouts,rewards,prompts,eval,launch",
        help="pages visited in turn while the run trains, comma-separated",
    )
    parser.add_argument("--dwell", type=float, default=30, help="seconds on each page of the walk")
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="pairs of runs (alone, watched), in alternating order (AB BA AB ...: an even count "
        "balances it) so that a drift in the machine's pace weighs on both sides; one ratio a "
        "pair, and their median",
    )
    parser.add_argument("--skip-alone", action="store_true", help="only the watched run")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--screenshots", default=str(ROOT / "test-artifacts" / "bench_watch"))
    args = parser.parse_args()
    walk = [p.strip() for p in args.walk.split(",") if p.strip()]
    unknown = [p for p in walk if p not in PAGES]
    if unknown:
        raise SystemExit(f"--walk: unknown page {unknown[0]!r}; choose among {', '.join(p for p in PAGES if p)}")
    if args.pairs < 1:
        raise SystemExit(f"--pairs {args.pairs}: give at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))  # a runs folder per run: each dashboard lists one run
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    config = run_config(args.steps)
    print(
        f"machine: {os.cpu_count()} cores; demo preset, {args.steps} training steps; walk {','.join(walk)}, "
        f"{args.dwell:.0f} s a page; screenshots in {shots}",
        flush=True,
    )
    ratios = []
    for i in range(args.pairs):
        order = ["alone", "watched"] if i % 2 == 0 else ["watched", "alone"]
        figures = {}
        for side in order:
            if side == "alone" and not args.skip_alone:
                figures["alone"] = run_alone(config, tmp / f"alone-{i}", f"alone-{i}")
                print(
                    f"pair {i}: alone    {figures['alone'][0]:7.1f} s  trainer CPU {figures['alone'][1]:.0f} s",
                    flush=True,
                )
            elif side == "watched":
                w = figures["watched"] = run_watched(config, tmp / f"watched-{i}", f"watched-{i}", args, walk, shots)
                print(
                    f"pair {i}: watched  {w['wall']:7.1f} s  trainer CPU {w['trainer']:.0f} s, dashboard server CPU "
                    f"{w['server']:.0f} s, browser CPU {w['browser']:.0f} s, {w['visits']} page visits",
                    flush=True,
                )
        if "alone" in figures:
            ratios.append(figures["watched"]["wall"] / figures["alone"][0])
            print(f"pair {i}: watched / alone {ratios[-1]:.2f}x", flush=True)
    if ratios:
        print(
            f"\nwatched / alone over {len(ratios)} pair(s): median {statistics.median(ratios):.2f}x, "
            f"from {min(ratios):.2f}x to {max(ratios):.2f}x"
        )


if __name__ == "__main__":
    main()
