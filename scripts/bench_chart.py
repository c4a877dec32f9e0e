"""Chart the benchmarks' ratios: each candidate's speed against the baseline it was timed with, from the JSON that
``pytest benchmarks/ --benchmark-only --benchmark-json=bench.json`` writes.

    uv run python scripts/bench_chart.py bench.json bench.png

One bar per benchmark: baseline time / candidate time, both by their best (minimum) round, so > 1 means the candidate
is faster (fastcollate against ``default_collate``, a checkpoint's blocking time against ``torch.save``) and < 1 that
it costs something (``TrainLoop.fit`` against a hand-written loop: 0.97 is a 3 % overhead). The machine named in the
JSON is the chart's subtitle.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any


def ratios(data: dict[str, Any]) -> list[tuple[str, float]]:
    """``(label, baseline_min / candidate_min)`` for every benchmark timed against an interleaved baseline."""
    rows = []
    for bench in data["benchmarks"]:
        info, stats = bench.get("extra_info", {}), bench["stats"]
        times = info.get("baseline_times")
        if not times or not stats.get("rounds"):
            continue
        base_min = min(times[-stats["rounds"] :])  # the warm-up rounds ran the baseline too
        label = f"{info['workload']}: {info['candidate']} vs {info['baseline']}"
        rows.append((label, base_min / stats["min"]))
    return sorted(rows)


def machine(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    if "aitoolbox_machine" in info:  # benchmarks/conftest.py: cores, CPU, torch, CUDA, Python
        return f"{info['aitoolbox_machine'].removeprefix('machine: ')}, {data.get('datetime', '')[:10]}"
    cpu = info.get("cpu", {})
    return (
        f"{cpu.get('count', '?')} cores ({cpu.get('brand_raw', info.get('processor', '?'))}), "
        f"Python {info.get('python_version', '?')}, {data.get('datetime', '')[:10]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="the --benchmark-json output")
    parser.add_argument("png", type=Path, help="the chart to write")
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    rows = ratios(data)
    if not rows:
        raise SystemExit(f"{args.json} holds no benchmark timed against a baseline (run with --benchmark-only)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    labels, values = zip(*rows, strict=True)
    colors = ["tab:green" if v >= 1 else "tab:orange" for v in values]
    ax.barh(range(len(rows)), [v - 1 for v in values], left=1, color=colors)  # from 1: faster right, slower left
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xscale("log")  # ratios: 2x faster and 2x slower are the same distance from 1
    ax.axvline(1.0, color="black", linewidth=1)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}x", va="center", fontsize=8)
    ax.set_xlabel("baseline time / candidate time (best round; > 1: the candidate is faster)")
    ax.set_title("aitoolbox benchmarks\n" + "\n".join(textwrap.wrap(machine(data), 90)), fontsize=9)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    sys.stdout.write(f"{args.png}: {len(rows)} ratios\n")


if __name__ == "__main__":
    main()
