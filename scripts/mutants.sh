#!/usr/bin/env bash
# Mutation testing of the critical modules (issue 21): mutmut plants small bugs in the modules that
# pyproject.toml's [tool.mutmut] lists, runs the tests that reach each one (those of the module's own test
# package: tests/conftest.py), and scripts/mutants_report.py prints the kill rate per module and every survivor.
# Not part of .ci/run: all modules take close to two hours on a 2-core machine; one module takes minutes.
#
#   bash scripts/mutants.sh                          every listed module, from scratch
#   bash scripts/mutants.sh workers/executor.py ...  those modules only (their mutants are run again)
#   bash scripts/mutants.sh --resume                 go on where the last run stopped (unchecked mutants only)
#   .venv/bin/mutmut show NAME      one mutant's diff;   .venv/bin/mutmut apply NAME   plants it in the tree
#
# Needs the services the tests use (PostgreSQL, Redis). Exits 1 when a module reported is below 90 %.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

resume=false
if [ "${1:-}" = "--resume" ]; then resume=true; shift; fi
modules=("$@")
patterns=()
for module in "${modules[@]}"; do
    [ -f "$module" ] || { echo "no such module: $module" >&2; exit 2; }
    dotted=${module%.py}
    patterns+=("${dotted//\//.}.*")
done
# A fresh run regenerates the mutants and the map of which tests reach which function.
if ! $resume && [ ${#modules[@]} -eq 0 ]; then rm -rf mutants; fi

# A planted bug that makes a test wait for what never comes costs that test's deadline, per mutant: shorter
# deadlines here (tests/deadlines.py), still many times what a passing test needs.
export LLADA_TEST_DEADLINE_SCALE=${LLADA_TEST_DEADLINE_SCALE:-0.3}
# Two mutants per core: their tests wait on sockets, threads and databases more than they compute (one per core
# kept the CPUs less than half busy).
children=${MUTANT_CHILDREN:-$((2 * $(nproc)))}

started=$(date +%s)
# mutmut's spinner redraws its line many times a second: drop those lines, keep everything else.
set +o pipefail
.venv/bin/mutmut run --max-children "$children" "${patterns[@]}" 2>&1 | tr '\r' '\n' \
    | LC_ALL=C grep -av $'^\xe2[\xa0-\xa3]'
status=${PIPESTATUS[0]}
set -o pipefail
echo "mutmut ran for $(( ($(date +%s) - started) / 60 )) min (exit status $status)"
[ "$status" = 0 ] || exit "$status"
.venv/bin/python scripts/mutants_report.py "${modules[@]}"
