#!/usr/bin/env bash
# The package suites as a busy CI runner launches them: in the background (SIGINT ignored, as for `cmd &` in a
# script, nohup and many runners) while two CPU hogs keep both cores busy. The tests must hold there too: no assertion
# on wall-clock timing, on terminal redraws or on the signal dispositions a process started with.
#   bash scripts/test_under_load.sh [pytest args...]
source "$(dirname "$0")/_bootstrap.sh"
hogs=()
for _ in 1 2; do
    python3 -c 'while True: pass' &
    hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
echo "== package suites, launched in the background with SIGINT ignored, both cores busy ($(date +%T))"
(
    trap '' INT  # inherited through exec: the tests start with SIGINT ignored
    exec uv run --locked pytest packages/core-loop/tests packages/checkpointing/tests packages/results/tests \
        packages/cloud/tests packages/fastcollate-rs/tests -q -p no:cacheprovider "$@"
) </dev/null &
wait $!
