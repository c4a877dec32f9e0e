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
