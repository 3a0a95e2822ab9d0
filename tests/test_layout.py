"""The code's shape, as the README's reading order promises it: the learning path reads top to bottom
and holds no process control (that is core/lifecycle.py's)."""

import ast
import re

import pytest

from tests.conftest import ROOT

# The modules a reader follows from core/train.py: what the run learns from and how.
LEARNING_PATH = ["train", "prompts", "rewards", "data", "model", "tiny_model", "gguf_model", "advantage",
                 "rollouts", "evaluate", "stop_at_final"]
# Names that belong to the process around a run: signals, locks, exec, other processes, status.json.
PROCESS_CONTROL = {"signal", "fcntl", "flock", "psutil", "execv", "execvp", "kill", "StatusFile", "update_status",
                   "lock_run_dir", "GracefulStop", "StopRequested"}


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


@pytest.mark.parametrize("module", LEARNING_PATH)
def test_the_learning_path_holds_no_process_control(module):
    tree = ast.parse((ROOT / "core" / f"{module}.py").read_text())
    assert not names_used(tree) & PROCESS_CONTROL, f"core/{module}.py uses {sorted(names_used(tree) & PROCESS_CONTROL)}"


def test_train_builds_and_runs_the_trainer_on_its_first_screen():
    tree = ast.parse((ROOT / "core" / "train.py").read_text())
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    calls = {}
    for node in ast.walk(train):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            calls.setdefault(name, node.lineno - train.lineno)
    assert calls["GRPOTrainer"] < 60 and calls["train"] < 60, calls
    assert calls["GRPOTrainer"] < calls["train"]


def test_the_readme_teaches_in_few_lines_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
