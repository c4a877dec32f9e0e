#!/usr/bin/env bash
# The whole test suite: lint; the wheels built and each installed alone, with only its declared dependencies, into a
# fresh environment without Rust, running its tests (then all of them: the seed examples and the demo); the
# cross-package tests together in the development environment (with doctests and the documentation site); every
# benchmark once. The package suites run in the background (SIGINT ignored, as `cmd &` in a script, nohup and many
# CI runners start them) while the cross-package suite keeps both cores busy: they must hold on a busy machine, and
# no CPU is burnt on artificial load (AITB_TEST_HOGS=N adds N busy processes to it).
#
# Every stage runs, whatever happened before it: one failing test never hides the stages after it. The failed
# stages are listed at the end, and the script exits non-zero if there is one.
source "$(dirname "$0")/_bootstrap.sh"
failed=()

stage() {  # stage NAME FUNCTION: run it in a bash of its own with errexit (its first failing command fails it)
    echo "== $1 ($(date +%T))"
    # a separate process: errexit holds inside it (in this shell, an `if` would turn it off for the function)
    if ! bash -euo pipefail -c "$(declare -p dist pytest_args); $(declare -f "$2"); $2"; then
        failed+=("$1")
        echo "!! stage failed: $1"
    fi
}

lint() {
    uv run --locked ruff check .
    uv run --locked ruff format --check .   # ruff also holds the complexity limit (mccabe, 12)
    uv run --locked python scripts/check_architecture.py  # module sizes, private imports, import cycles, exact bounds
}

rust() {
    (cd packages/fastcollate-rs && cargo fmt --check && cargo clippy --quiet --all-targets --features abi3 \
        -- -D warnings && cargo test --quiet)
    uv run --locked python -m mypy.stubtest fastcollate._native --mypy-config-file scripts/stubtest.ini
    uv run --locked mypy  # --strict over all six distributions ([tool.mypy] in pyproject.toml)
}

wheels() {
    bash scripts/build.sh "$dist"
}

suites() {
    # The packages' own tests against their wheels (scripts/test_wheels.sh, in the background: its output is shown
    # when it ends) beside the cross-package tests and the doctests, on two pytest-xdist workers (most tests wait on
    # child processes: two workers keep both cores busy). Both run to their end; either failing fails the stage.
    local log rc_wheels rc_full
    log=$(dirname "$dist")/test_wheels.log
    bash scripts/test_wheels.sh "$dist" >"$log" 2>&1 </dev/null &
    local pid=$!
    rc_full=0
    uv run --locked pytest tests -q -n 2 --doctest-modules packages/*/src packages/fastcollate-rs/python \
        "${pytest_args[@]}" || rc_full=$?
    rc_wheels=0
    wait "$pid" || rc_wheels=$?
    echo "== the package suites against their wheels (ran beside the cross-package suite) ($(date +%T))"
    cat "$log"
    ((rc_full == 0)) || echo "!! the cross-package suite failed"
    ((rc_wheels == 0)) || echo "!! the wheels' suites failed"
    ((rc_full == 0 && rc_wheels == 0))
}

benchmarks() {
    AITB_BENCH_QUICK=1 uv run --locked pytest benchmarks -q --benchmark-disable -p no:cacheprovider
}

pytest_args=("$@")
dist=$(mktemp -d)/dist
trap 'rm -rf "$(dirname "$dist")"' EXIT
echo "== environment ($(date +%T))"
uv sync --all-packages --locked --quiet  # every stage needs it: a failure here ends the run
stage "lint" lint
stage "rust (fastcollate kernels), stubs, mypy" rust
stage "wheels built" wheels
stage "suites: the cross-package suite, and beside it each wheel installed alone (no Rust on PATH) with its tests" suites
stage "benchmarks, each once (AITB_BENCH_QUICK=1, no timing)" benchmarks
echo "== done ($(date +%T))"
if ((${#failed[@]})); then
    printf '!! %d stage(s) failed:\n' "${#failed[@]}"
    printf '   - %s\n' "${failed[@]}"
    exit 1
fi
echo "all stages passed"
