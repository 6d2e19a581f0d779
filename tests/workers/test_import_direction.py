"""Imports run one way: the executor a worker runs is chosen above the executors, never inside one of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.reads_source
ROOT = Path(__file__).resolve().parents[2]


def imported_modules(relative: str) -> set[str]:
    """Every module a file imports, at its top or inside a function (lazy imports count too)."""
    tree = ast.parse((ROOT / relative).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_executor_module_knows_no_executor_above_it():
    imports = imported_modules("workers/executor.py")
    assert not {m for m in imports if m.startswith(("workers.engine", "workers.executor_choice", "workers.tasks"))}


def test_the_engine_backed_executor_does_not_reach_back_to_the_choice():
    assert "workers.executor_choice" not in imported_modules("workers/engine/engine_backed.py")


def test_the_choice_imports_the_engine_only_when_it_is_chosen():
    tree = ast.parse((ROOT / "workers/executor_choice.py").read_text())
    top_level = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not {m for m in top_level if m and m.startswith("workers.engine.engine_backed")}
    assert "workers.engine.engine_backed" in imported_modules("workers/executor_choice.py")
