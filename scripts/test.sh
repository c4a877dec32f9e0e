#!/usr/bin/env bash
# The whole test suite: lint, each package alone in an environment holding only it and its dependencies,
# then everything together in the full environment (with doctests).
source "$(dirname "$0")/_bootstrap.sh"

echo "== lint"
uv sync --all-packages --locked --quiet
uv run --locked ruff check .
uv run --locked ruff format --check .   # ruff also holds the complexity limit (mccabe, 12)
uv run --locked python scripts/check_architecture.py  # module sizes, private imports, import cycles

echo "== rust (fastcollate kernels)"
(cd packages/fastcollate-rs && cargo fmt --check && cargo clippy --quiet --all-targets --features abi3 -- -D warnings \
    && cargo test --quiet)
uv run --locked python -m mypy.stubtest fastcollate._native
uv run --locked mypy  # --strict over all six distributions ([tool.mypy] in pyproject.toml)

echo "== each package alone"
for dir in packages/*/; do
    name=$(basename "$dir")
    dist=$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/pyproject.toml" | head -1)
    env=".venv-$name"
    echo "-- $dist (only its declared dependencies, in $env)"
    UV_PROJECT_ENVIRONMENT="$env" uv sync --package "$dist" --locked --quiet
    "$env/bin/python" -m pytest "$dir/tests" -q -p no:cacheprovider
done

echo "== full suite"
uv run --locked pytest packages tests -q --doctest-modules packages/*/src packages/fastcollate-rs/python "$@"
