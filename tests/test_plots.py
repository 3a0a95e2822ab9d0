"""`python -m core.plots prompt-accuracy`: per-prompt accuracy per step, refusing partial groups."""

import contextlib
import io
import json
import subprocess
import sys
from types import SimpleNamespace

from core.plots import main, opened, prompt_accuracy
from core.rundir import rollout_record
from tests.conftest import ROOT


def plot(*args, process=False):
    """`python -m core.plots prompt-accuracy ARGS`: in a process of its own when `process`, else through its
    main() in this one (no interpreter to start): its exit code and stderr."""
    if process:
        return subprocess.run(
            [sys.executable, "-m", "core.plots", "prompt-accuracy", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["prompt-accuracy", *args])
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def rows(prompt_id, step, correct, attempt=1):
    return [
        rollout_record(prompt_id=prompt_id, step=step, correct=bool(c), sample=i, attempt=attempt)
        for i, c in enumerate(correct)
    ]


def test_accuracy_is_the_group_mean_per_step_of_the_latest_attempt(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    records = (
        rows("a", 1, [0, 0, 1, 0])
        + rows("a", 2, [1, 1, 0, 1])
        + rows("b", 1, [1, 1, 1, 1])
        + rows("a", 2, [0, 0, 0, 1], attempt=2)
    )  # a resumed run scored step 2 again: only that attempt counts
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with opened(path) as store:
        assert prompt_accuracy(store, "a", k=4) == [(1, 0.25, 4), (2, 0.25, 4)]


def test_html_and_png_from_a_real_run(tiny_run, tmp_path):
    first = json.loads((tiny_run / "rollouts" / "rollouts.jsonl").read_text().splitlines()[0])
    html, png = tmp_path / "acc.html", tmp_path / "acc.png"
    result = plot("--rollouts", str(tiny_run), "--prompt-id", first["prompt_id"], "--out", str(html), process=True)
    assert result.returncode == 0, result.stderr
    assert "plotly" in html.read_text() and first["prompt_id"] in html.read_text()
    result = plot(
        "--rollouts",
        str(tiny_run / "rollouts" / "rollouts.jsonl"),
        "--prompt-id",
        first["prompt_id"],
        "--num-generations",
        "4",
        "--out",
        str(png),
    )
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_incomplete_groups_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    records = rows("a", 0, [1, 0, 1, 0]) + rows("a", 1, [1, 1])  # step 1 has 2 of K=4 so far
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"half": ')
    out = tmp_path / "acc.html"
    result = plot("--rollouts", str(path), "--prompt-id", "a", "--num-generations", "4", "--out", str(out))
    assert result.returncode == 2 and not out.exists()
    assert "incomplete groups of K=4 completions (step 1: 2)" in result.stderr and "--allow-partial" in result.stderr
    result = plot(
        "--rollouts", str(path), "--prompt-id", "a", "--num-generations", "4", "--allow-partial", "--out", str(out)
    )
    assert result.returncode == 0 and out.exists()


def test_unknown_prompt_is_a_clear_error(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(json.dumps(rows("a", 0, [1, 0])[0]) + "\n")
    result = plot("--rollouts", str(path), "--prompt-id", "zzz", "--out", str(tmp_path / "x.html"))
    assert result.returncode == 2 and result.stderr.strip() == "error: no rollouts for prompt id 'zzz'"


def test_where_the_plot_cannot_go_and_a_k_below_1_are_one_line_each(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(json.dumps(rows("a", 0, [1, 0])[0]) + "\n")
    (tmp_path / "d.html").mkdir()
    cases = {
        str(tmp_path / "nodir" / "a.html"): f"error: --out '{tmp_path / 'nodir' / 'a.html'}': there is no folder "
        f"'{tmp_path / 'nodir'}' to write it in",
        str(
            tmp_path / "d.html"
        ): f"error: --out '{tmp_path / 'd.html'}' is a folder: give a file name ending in .html or .png",
    }
    for out, line in cases.items():
        result = plot("--rollouts", str(path), "--prompt-id", "a", "--out", out)
        assert (result.returncode, result.stderr.strip()) == (2, line)
    result = plot("--rollouts", str(path), "--prompt-id", "a", "--out", "/proc/plot.html")  # a folder no one writes in
    assert result.returncode == 2 and result.stderr.strip().startswith("error: could not write '/proc/plot.html' (")
    result = plot(
        "--rollouts", str(path), "--prompt-id", "a", "--num-generations", "-1", "--out", str(tmp_path / "k.html")
    )
    assert (
        result.returncode == 2
        and result.stderr.strip().startswith("error: --num-generations -1: K")
        and not (tmp_path / "k.html").exists()
    )
    (tmp_path / "run.yaml").write_text("num_generations: four\n")  # a run.yaml edited by hand: K from the groups
    (tmp_path / "rollouts").mkdir()
    path.rename(tmp_path / "rollouts" / "rollouts.jsonl")
    result = plot("--rollouts", str(tmp_path), "--prompt-id", "a", "--allow-partial", "--out", str(tmp_path / "k.html"))
    assert result.returncode == 0 and (tmp_path / "k.html").exists(), result.stderr
