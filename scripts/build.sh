#!/usr/bin/env bash
# Build every distribution into dist/ (or the folder given): the sdist and wheel of the five Python packages (each
# wheel built from its sdist, which proves the sdist complete), and fastcollate's sdist and one abi3 wheel for Linux
# x86_64 tagged manylinux2014 (glibc >= 2.17), its Rust linked with zig from PyPI (maturin[zig]).
source "$(dirname "$0")/_bootstrap.sh"
out="$(realpath -m "${1:-dist}")"
rm -rf "$out" && mkdir -p "$out"
for dist in aitoolbox-core-loop aitoolbox-checkpointing aitoolbox-results aitoolbox-cloud aitoolbox; do
    uv build --quiet --package "$dist" --out-dir "$out"
done
uv build --quiet --package fastcollate --sdist --out-dir "$out"
(cd packages/fastcollate-rs && uv tool run --quiet --from 'maturin[zig]>=1.7,<2' maturin build --quiet --release \
    --zig --compatibility manylinux2014 --target x86_64-unknown-linux-gnu --out "$out")
ls -1 "$out"
