"""scripts/bench_chart.py turns pytest-benchmark's JSON into the ratio chart (the documented command)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_chart.py"


def _bench(workload: str, candidate_min: float, baseline_times: list[float], rounds: int) -> dict[str, object]:
    return {
        "name": f"test_{workload}",
        "extra_info": {"workload": workload, "candidate": "cand", "baseline": "base", "baseline_times": baseline_times},
        "stats": {"min": candidate_min, "rounds": rounds},
    }


def test_ratios_use_the_best_timed_rounds_and_skip_benchmarks_without_a_baseline() -> None:
    spec = importlib.util.spec_from_file_location("bench_chart", SCRIPT)
    assert spec is not None and spec.loader is not None
    chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chart)
    data = {
        "benchmarks": [
            _bench("a", 1.0, [0.1, 4.0, 5.0], rounds=2),  # the warm-up round's 0.1 is not a timed round
            _bench("b", 2.0, [1.0], rounds=1),
            {"name": "import", "extra_info": {}, "stats": {"min": 1.0, "rounds": 1}},
        ]
    }
    assert chart.ratios(data) == [("a: cand vs base", 4.0), ("b: cand vs base", 0.5)]


def test_the_command_writes_a_png(tmp_path: Path) -> None:
    source = tmp_path / "bench.json"
    source.write_text(
        json.dumps(
            {
                "machine_info": {"aitoolbox_machine": "machine: 2 cores (test CPU), torch 2, no CUDA, Python 3"},
                "datetime": "2026-12-01T00:00:00",
                "benchmarks": [_bench("a", 1.0, [3.0], 1), _bench("b", 3.0, [1.0], 1)],
            }
        )
    )
    out = tmp_path / "bench.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(source), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "2 ratios" in proc.stdout
