"""The code's shape, as the README's reading order promises it: the learning path reads top to bottom
and reaches no process control through its imports (that is the runtime's: core/lifecycle.py,
core/runstate.py, core/runs.py and the command line's core/train.py)."""

import ast
import functools
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The modules a reader follows from core/grpo.py: what the run learns from and how.
LEARNING_PATH = [
    "grpo",
    "prompts",
    "rewards",
    "data",
    "model",
    "tiny_model",
    "gguf_model",
    "advantage",
    "loss",
    "rollouts",
    "evaluate",
    "stop_at_final",
]
RUNTIME = {"lifecycle", "runstate", "runs", "train"}  # the process around a run, and the dashboard's control of it
# Names that belong to the process around a run: signals, locks, exec, other processes, status.json.
PROCESS_CONTROL = {
    "signal",
    "fcntl",
    "flock",
    "psutil",
    "execv",
    "execvp",
    "kill",
    "StatusFile",
    "update_status",
    "lock_run_dir",
    "GracefulStop",
    "StopRequested",
}


def names_used(tree: ast.AST) -> set[str]:
    """Every name, attribute and imported module (each dotted part) the code mentions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(part for alias in node.names for part in alias.name.split("."))
            found.update((getattr(node, "module", None) or "").split("."))
    return found


def source(module: str) -> Path:
    """The file of core module `module` (`store.ingest`, `config`)."""
    path = ROOT / "core" / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.parametrize("module", LEARNING_PATH)
def test_the_learning_path_reaches_no_process_control(module):
    imports, reached, todo = core_imports(), set(), [module]
    while todo:  # every core module it imports, and theirs in turn
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += imports[name][0]
    assert not reached & RUNTIME, f"core/{module} reaches {sorted(reached & RUNTIME)} through its imports"
    for name in sorted(reached):
        used = names_used(ast.parse(source(name).read_text())) & PROCESS_CONTROL
        assert not used, f"core/{module} reaches {name}, which uses {sorted(used)}"


def test_train_builds_and_runs_the_trainer_on_its_first_screen():
    tree = ast.parse((ROOT / "core" / "grpo.py").read_text())
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    calls = {}
    for node in ast.walk(train):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            calls.setdefault(name, node.lineno - train.lineno)
    assert calls["GRPOTrainer"] < 60 and calls["train"] < 60, calls
    assert calls["GRPOTrainer"] < calls["train"]


def anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives a Markdown page's headings: lower case, punctuation dropped, spaces as -."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_teaches_in_few_lines_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = page.parent / target if target else page
            assert linked.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.name} links to {target}#{anchor}: no such heading"


@functools.cache
def core_imports() -> dict[str, tuple[set[str], set[str]]]:
    """Each core module (`store.ingest` for core/store/ingest.py): (the core modules it imports at its
    top, those it imports inside a function)."""
    found = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT / "core").with_suffix("").parts).removesuffix(".__init__")
        tree, top, inner = ast.parse(path.read_text()), set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
                package = node.module.removeprefix("core").removeprefix(".")
                names = {package} if package else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                names = {a.name.removeprefix("core.") for a in node.names if a.name.startswith("core.")}
            else:
                continue
            (top if node in tree.body else inner).update(names)
        found[name] = top, inner
    modules = set(found)
    return {name: (top & modules, inner & modules) for name, (top, inner) in found.items()}


def test_core_imports_each_module_at_its_top_and_in_no_circle():
    imports = core_imports()
    assert {name: inner for name, (_, inner) in imports.items() if inner} == {}  # none hidden in a function
    done, path = set(), []

    def visit(name):  # depth first: a module met again on the current path closes a circle
        assert name not in path, "import circle: " + " -> ".join(path[path.index(name) :] + [name])
        if name in done:
            return
        path.append(name)
        for other in sorted(imports[name][0]):
            visit(other)
        path.pop()
        done.add(name)

    for name in imports:
        visit(name)


def test_only_the_run_directory_module_builds_the_paths_of_a_runs_files():
    """Writers and readers take a run's paths from core/rundir.py: no other module joins one of its
    names onto a folder itself (`run_dir / "status.json"`), and none lists its folders by pattern."""
    from core import rundir

    names = {
        rundir.CONFIG,
        rundir.STATUS,
        rundir.LOCK,
        rundir.METRICS,
        rundir.ROLLOUTS,
        rundir.EVAL,
        rundir.EVAL_SUMMARY,
        rundir.MODEL,
        rundir.LOG,
        "rollouts.jsonl",
    }
    found = []
    for path in sorted([*(ROOT / "core").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")]):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                found += [
                    f"{path.name}:{node.lineno}"
                    for side in (node.left, node.right)
                    if isinstance(side, ast.Constant) and side.value in names
                ]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "glob"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value.startswith(("rollouts", "*.jsonl"))
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"run-directory paths built outside core/rundir.py: {found}"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_finds_nothing_to_mend(command):
    """ruff (configured in pyproject.toml) finds no lint and no file to reformat: `ruff check --fix .` and
    `ruff format .` mend what it finds."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_the_end_of_a_run_says_what_skipped_and_the_command_that_enables_it():
    from types import SimpleNamespace

    from tests.conftest import CHROMIUM_MISSING, GSM8K_MISSING, skip_notes

    reports = [
        SimpleNamespace(longrepr=("tests/x.py", 1, f"Skipped: {reason}"))
        for reason in [CHROMIUM_MISSING] * 9 + [GSM8K_MISSING, "another reason"]
    ]
    assert skip_notes(reports) == [
        "9 tests skipped: Debian's chromium is not installed; to run them: apt-get update && apt-get install -y "
        "chromium (as .ci/run does)",
        "1 test skipped: ../shared/data/gsm8k is not present; to run them: put the GSM8K files (train.jsonl, "
        "test.jsonl) in ../shared/data/gsm8k/ beside the repository",
    ]
    assert skip_notes([]) == []
