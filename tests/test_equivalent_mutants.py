"""tests/EQUIVALENT_MUTANTS.md stays true to the code without a mutmut run: every entry names a mutated module and a
function in it, and the lines it says a mutant removes are still in that function (scripts/mutants_report.py
matches survivors by exactly those)."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutants_report", ROOT / "scripts" / "mutants_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def functions_of(path: Path) -> dict[str, str]:
    """`name` or `Class.name` → the function's source lines, stripped, joined by newlines."""
    source = path.read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", [])
        for child in body if isinstance(body, list) else []:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{node.name}.{child.name}" if isinstance(node, ast.ClassDef) else child.name
                found[name] = "\n".join(line.strip() for line in lines[child.lineno - 1:child.end_lineno])
    return found


def test_every_entry_names_a_mutated_function_and_lines_it_still_has():
    mutated = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"])
    entries = report.read_equivalents()
    assert entries, "no entries parsed"
    for path, function, changed in entries:
        assert path in mutated, f"{path} is not mutated"
        body = functions_of(ROOT / path).get(function)
        assert body is not None, f"{path} has no function {function}"
        removed = [line[1:] for line in changed if line.startswith("-")]
        assert removed and all(line in body for line in removed), f"{path} {function}: {removed}"


def test_mutant_names_map_to_the_functions_entries_name():
    assert report.function_of("shared.repository.x_claim__mutmut_3") == "claim"
    assert report.function_of("workers.lease.xǁLeaseǁbeat__mutmut_12") == "Lease.beat"
    assert report.changed_lines("--- a\n+++ b\n-    x = 1\n+    x = 2\n     y\n") == ("-x = 1", "+x = 2")
