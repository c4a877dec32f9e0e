#!/usr/bin/env bash
# The whole test suite: lint; the wheels built and each installed alone, with only its declared dependencies, into a
# fresh environment without Rust, running its tests (then all of them: the seed examples and the demo); the
# cross-package tests together in the development environment (with doctests and the documentation site); every
# benchmark once.
source "$(dirname "$0")/_bootstrap.sh"
section() { echo "== $1 ($(date +%T))"; }

section "lint"
uv sync --all-packages --locked --quiet
uv run --locked ruff check .
uv run --locked ruff format --check .   # ruff also holds the complexity limit (mccabe, 12)
uv run --locked python scripts/check_architecture.py  # module sizes, private imports, import cycles, exact bounds

section "rust (fastcollate kernels)"
(cd packages/fastcollate-rs && cargo fmt --check && cargo clippy --quiet --all-targets --features abi3 -- -D warnings \
    && cargo test --quiet)
uv run --locked python -m mypy.stubtest fastcollate._native
uv run --locked mypy  # --strict over all six distributions ([tool.mypy] in pyproject.toml)

section "wheels: built, then each installed alone (no Rust on PATH)"
dist=$(mktemp -d)/dist
trap 'rm -rf "$(dirname "$dist")"' EXIT
bash scripts/build.sh "$dist"
bash scripts/test_wheels.sh "$dist"

section "full suite"
# The packages' own tests ran above against their wheels; here: the cross-package tests and the doctests.
uv run --locked pytest tests -q --doctest-modules packages/*/src packages/fastcollate-rs/python "$@"

section "benchmarks, each once (AITB_BENCH_QUICK=1, no timing)"
AITB_BENCH_QUICK=1 uv run --locked pytest benchmarks -q --benchmark-disable -p no:cacheprovider
section "done"
