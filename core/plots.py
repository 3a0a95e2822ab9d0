"""Plots from the command line.

    python -m core.plots prompt-accuracy --rollouts runs/<run> --prompt-id <id> --out acc.html

`prompt-accuracy`: one prompt's accuracy (mean of `correct` over its group of K completions) at
each step, as the store computes it for the Prompts page (the latest attempt of each step). A group
with fewer than K completions (a run still writing, a crashed rank) is refused unless --allow-partial.
`.html` is an interactive Plotly page, `.png` a static image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from core.rundir import read_config, rollouts_path, whole_number
from core.store import RunStore


@contextmanager
def opened(source: Path):
    """A RunStore of `source` (a run directory, or one rollouts file read as a run of one rank), refreshed."""
    with tempfile.TemporaryDirectory(prefix="plots-") as folder:
        if not source.is_dir():  # a rollouts file alone: a run folder around it
            rollouts_path(folder).parent.mkdir()
            rollouts_path(folder).symlink_to(source.resolve())
        store = RunStore(source if source.is_dir() else folder)
        store.refresh()
        try:
            yield store
        finally:
            store.close()


def prompt_accuracy(store: RunStore, prompt_id: str, k: int, allow_partial: bool = False) -> list[tuple]:
    """[(step, accuracy, completions)] for one prompt (RunStore.prompt_accuracy); ValueError names
    incomplete groups."""
    points = store.prompt_accuracy([prompt_id])
    if points.empty:
        raise ValueError(f"no rollouts for prompt id '{prompt_id}'")
    partial = {int(step): int(n) for step, n in zip(points["step"], points["n"]) if n % k}
    if partial and not allow_partial:
        shown = ", ".join(f"step {s}: {n}" for s, n in sorted(partial.items())[:5])
        raise ValueError(
            f"prompt '{prompt_id}' has incomplete groups of K={k} completions ({shown}): the run may "
            "still be writing them; pass --allow-partial to plot them anyway"
        )
    return [(int(step), float(a), int(n)) for step, a, n in zip(points["step"], points["accuracy"], points["n"])]


def _group_size(source: Path, store: RunStore) -> int:
    """K: the run's num_generations, else the largest sample index seen plus one."""
    k = whole_number(read_config(source).get("num_generations")) if source.is_dir() else None
    return k or store.largest_group()  # a run.yaml without a whole number there has no K to give


def save_plot(points: list[tuple], prompt_id: str, out: Path) -> None:
    steps, accuracy = [p[0] for p in points], [p[1] for p in points]
    title = f"Accuracy per step for prompt {prompt_id}"
    if out.suffix == ".png":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, accuracy, marker="o")
        ax.set(title=title, xlabel="step", ylabel="accuracy", ylim=(-0.05, 1.05))
        fig.savefig(out, dpi=100, bbox_inches="tight")
        plt.close(fig)
    else:
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Scatter(
                x=steps,
                y=accuracy,
                mode="lines+markers",
                customdata=[p[2] for p in points],
                hovertemplate="step %{x}<br>accuracy %{y:.2f}<br>%{customdata} completions",
            )
        )
        fig.update_layout(title=title, xaxis_title="step", yaxis_title="accuracy", yaxis_range=[-0.05, 1.05])
        fig.write_html(out, include_plotlyjs=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.plots", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prompt-accuracy", help="accuracy per step for one prompt")
    p.add_argument("--rollouts", required=True, help="a rollouts*.jsonl file or a run directory")
    p.add_argument("--prompt-id", required=True)
    p.add_argument("--num-generations", type=int, help="K; default: the run's run.yaml, else the largest group")
    p.add_argument("--allow-partial", action="store_true", help="plot groups with fewer than K completions")
    p.add_argument("--out", required=True, help="output file, .html or .png")
    args = parser.parse_args(argv)
    source, out = Path(args.rollouts), Path(args.out)
    try:
        if not source.exists():
            raise ValueError(f"--rollouts '{source}' does not exist: give a rollouts .jsonl file or a run directory")
        if out.suffix not in (".html", ".png"):
            raise ValueError(f"--out '{out}' must end in .html or .png")
        if out.is_dir():
            raise ValueError(f"--out '{out}' is a folder: give a file name ending in .html or .png")
        if not out.parent.is_dir():
            raise ValueError(f"--out '{out}': there is no folder '{out.parent}' to write it in")
        if args.num_generations is not None and args.num_generations < 1:
            raise ValueError(f"--num-generations {args.num_generations}: K, the completions per question, is 1 or more")
        with opened(source) as store:
            if store.skipped:
                print(f"skipped {store.skipped} line(s) that are not rollout records", file=sys.stderr)
            if not store.count():
                raise ValueError(f"no rollouts found in '{source}'")
            k = args.num_generations or _group_size(source, store)
            points = prompt_accuracy(store, args.prompt_id, k, args.allow_partial)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        save_plot(points, args.prompt_id, out)
    except OSError as e:  # no permission, a full disk
        print(f"error: could not write '{out}' ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(points)} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
