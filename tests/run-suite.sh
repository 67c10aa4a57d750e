#!/usr/bin/env bash
# The whole suite as two pytest sessions side by side (what `make test` runs): the tests marked
# `drivers` (fault injection, the cluster, the wheel: pf1m drivers as processes, a Ray cluster
# of their own) and the rest (one local Ray, the session's engines). Each alone leaves a core
# idle much of the time, since a process start is one import after another (the serial suite
# left 30% of the two cores idle); together they keep both busy. No test expects anything to
# happen within a time (their time limits are bounds on hangs), so sharing the cores changes no
# outcome. Arguments go to both sessions; a `-m EXPR` among them narrows each side's own
# selection. The drivers session's report follows the other's; the exit status fails if
# either session fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

args=() expr=""
while [ $# -gt 0 ]; do
    case "$1" in
        -m) expr=$2; shift 2 ;;
        -m*) expr=${1#-m}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
mine="drivers" rest="not drivers"
[ -n "$expr" ] && mine="drivers and ($expr)" rest="not drivers and ($expr)"

log=$(mktemp -t pf1m-drivers-XXXXXX.log)
# Its own process group, so that Ctrl-C or a SIGTERM to this script stops it too (a background
# job of a script ignores SIGINT).
setsid "$PY" -m pytest -m "$mine" -o cache_dir=.pytest_cache/drivers "${args[@]}" >"$log" 2>&1 &
drivers=$!
trap 'kill -TERM -- -"$drivers" 2>/dev/null; rm -f "$log"; exit 130' INT TERM
"$PY" -m pytest -m "$rest" "${args[@]}"
rest_code=$?
wait "$drivers"
drivers_code=$?
trap - INT TERM
echo
echo "==== the tests marked drivers, run beside the ones above ===="
cat "$log"
rm -f "$log"
# 5: no test selected, which is fine for one side when the arguments pick a few tests
[ "$rest_code" -eq 5 ] && [ "$drivers_code" -ne 5 ] && rest_code=0
[ "$drivers_code" -eq 5 ] && [ "$rest_code" -ne 5 ] && drivers_code=0
[ "$rest_code" -ne 0 ] && echo "the tests not marked drivers failed (exit $rest_code)"
[ "$drivers_code" -ne 0 ] && echo "the tests marked drivers failed (exit $drivers_code)"
[ "$rest_code" -ne 0 ] && exit "$rest_code"
exit "$drivers_code"
