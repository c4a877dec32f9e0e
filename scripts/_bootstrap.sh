# Sourced by the other scripts: make sure `uv` is on PATH (installed with pip if missing) and cd to the repo root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check uv
    export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
fi
# Python writes the bytecode of what it imports (a job whose environment says not to recompiles torch's ~2,000
# modules in every process: ~8 s each, for each of the test suite's many subprocesses).
unset PYTHONDONTWRITEBYTECODE
# Build caches outside the repository, as uv's package cache is: a fresh clone then compiles only what changed
# (cargo: the Rust dependencies of fastcollate, for clippy, the tests and the release wheel; mypy: its analysis).
cache_home=${XDG_CACHE_HOME:-$HOME/.cache}/aitoolbox
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache_home/cargo-target}
export MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-$cache_home/mypy}
