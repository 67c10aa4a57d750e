#!/usr/bin/env bash
# The whole suite as two pytest sessions side by side (what `make test` runs): the tests marked
# `drivers` (fault injection, the cluster, the wheel: pf1m drivers as processes, a Ray cluster
# of their own) and the rest (one local Ray, the session's engines). Each alone leaves a core
# idle much of the time, since a process start is one import after another (the serial suite
# left 30% of the two cores idle); together they keep both busy. Nothing in either depends on how
# fast anything runs, so sharing the cores changes no outcome. Arguments go to both sessions;
# the drivers session's report follows the other's, and the exit status fails if either does.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
log=$(mktemp -t pf1m-drivers-XXXXXX.log)
"$PY" -m pytest -m drivers -o cache_dir=.pytest_cache/drivers "$@" >"$log" 2>&1 &
drivers=$!
"$PY" -m pytest -m 'not drivers' "$@"
rest=$?
wait "$drivers"
mine=$?
echo
echo "==== the tests marked drivers, run beside the ones above ===="
cat "$log"
rm -f "$log"
# 5: no test selected, which is fine for one side when arguments pick a few tests
[ "$rest" -eq 5 ] && [ "$mine" -ne 5 ] && rest=0
[ "$mine" -eq 5 ] && [ "$rest" -ne 5 ] && mine=0
[ "$rest" -ne 0 ] && exit "$rest"
exit "$mine"
