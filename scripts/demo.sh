#!/usr/bin/env bash
# The main job: set up the environment (first run downloads torch, ~3 GB, into uv's cache) and train the demo.
source "$(dirname "$0")/_bootstrap.sh"
uv sync --all-packages --locked --quiet
exec uv run --locked python examples/train_digits.py "$@"
