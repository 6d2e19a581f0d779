"""The kill rate per module of the last `mutmut run`, and every survivor with its diff (scripts/mutants.sh).

Reads mutmut's result files (mutants/**/*.meta). A mutant counts as killed when a test failed on it or it
timed out. "No tests" means no test of the module's package ran the mutated function: it counts as a
survivor. A mutant an interrupted run did not reach is "not run", outside the rate. A survivor that
tests/EQUIVALENT_MUTANTS.md lists, by the lines it changes, is left out of the rate and the list: it
cannot change what a user sees. Entries are matched by their diff, not by mutmut's numbers, which shift
whenever a function changes; an entry that no longer matches a survivor is reported as stale.

Exits 1 when a module is below the required rate (--min, 90 by default).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "EQUIVALENT_MUTANTS.md"
KILLED = {"killed", "timeout", "caught by type check"}
# A fenced diff block of EQUIVALENT_MUTANTS.md: its first line names the file and the function.
_ENTRY = re.compile(r"```diff\n# (?P<path>\S+) (?P<function>\S+)\n(?P<lines>.*?)```", re.S)


def function_of(mutant: str) -> str:
    """`shared.repository.x_claim__mutmut_3` → `claim`; `…xǁLeaseǁbeat__mutmut_1` → `Lease.beat`."""
    name = mutant.rpartition("__mutmut_")[0].rpartition(".")[2]
    return name.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


def changed_lines(diff: str) -> tuple[str, ...]:
    return tuple(line[0] + line[1:].strip() for line in diff.splitlines()
                 if line[:1] in "+-" and not line.startswith(("+++", "---")))


def read_equivalents() -> dict[tuple, str]:
    """(path, function, changed lines) → the entry's heading line, for each entry in EQUIVALENT_MUTANTS.md."""
    if not EQUIVALENTS.exists():
        return {}
    entries = {}
    for match in _ENTRY.finditer(EQUIVALENTS.read_text()):
        key = (match["path"], match["function"], changed_lines(match["lines"]))
        entries[key] = f"{match['path']} {match['function']}"
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=90.0, help="the kill rate every module needs, in percent")
    parser.add_argument("modules", nargs="*", help="report these files only (default: every mutated one)")
    args = parser.parse_args(argv)

    equivalents = read_equivalents()
    matched: set[tuple] = set()
    rows, survivors = [], []
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        path = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        if args.modules and path not in args.modules:
            continue
        results = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter()
        for mutant, exit_code in sorted(results.items()):
            status = status_by_exit_code[exit_code]
            if status in KILLED:
                counts["killed"] += 1
                continue
            if status == "not checked":  # an interrupted run: neither killed nor survived yet
                counts["not run"] += 1
                continue
            diff = get_diff_for_mutant(mutant, path=ROOT / "mutants" / path)
            key = (path, function_of(mutant), changed_lines(diff))
            if key in equivalents:
                matched.add(key)
                counts["equivalent"] += 1
                continue
            counts["survived"] += 1
            survivors.append((mutant, status, diff))
        judged = counts["killed"] + counts["survived"]
        rate = 100.0 * counts["killed"] / judged if judged else 100.0
        rows.append((path, len(results), counts, rate))

    for mutant, status, diff in survivors:
        print(f"\n# {mutant}: {status}\n{diff}")
    for key in sorted(key for key in set(equivalents) - matched if not args.modules or key[0] in args.modules):
        print(f"\nstale entry in {EQUIVALENTS.relative_to(ROOT)}: {equivalents[key]} {key[2]}")

    print(f"\n{'module':40} {'mutants':>8} {'killed':>7} {'survived':>9} {'equivalent':>11} {'not run':>8} "
          f"{'rate':>7}")
    for path, total, counts, rate in rows:
        print(f"{path:40} {total:8} {counts['killed']:7} {counts['survived']:9} {counts['equivalent']:11} "
              f"{counts['not run']:8} {rate:6.1f}%")
    killed = sum(c["killed"] for _, _, c, _ in rows)
    judged = killed + sum(c["survived"] for _, _, c, _ in rows)
    print(f"{'all':40} {sum(t for _, t, _, _ in rows):8} {killed:7} {judged - killed:9} "
          f"{sum(c['equivalent'] for _, _, c, _ in rows):11} {sum(c['not run'] for _, _, c, _ in rows):8} "
          f"{100.0 * killed / max(judged, 1):6.1f}%")
    below = [path for path, _, _, rate in rows if rate < args.min]
    if below:
        print(f"below {args.min:.0f} %: {', '.join(below)}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
