"""Prints, after the benchmark table, each candidate's ratio to a baseline measured in the same run.

This machine's timings drift by 20 % or more between identical runs, so a candidate benchmark measures its baseline
*interleaved*: pytest-benchmark's ``setup`` runs one baseline round (timed by :func:`make_interleaved_baseline`) before
every timed candidate round. Both then see the same machine state. The candidate records the baseline times in
``benchmark.extra_info`` (``workload``, ``candidate``, ``baseline``, ``baseline_times``, optional ``steps``).
Other results (e.g. an import cost) are added with the ``report`` fixture.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

_EXTRA: list[str] = []


#: A benchmark is bounded by its own rounds; the unit tests' per-test timeout (300 s) killed the full-size W2 on a
#: busy machine. This limit only stops a hung benchmark.
BENCHMARK_TIMEOUT_S = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.timeout(BENCHMARK_TIMEOUT_S))


@pytest.fixture
def report() -> Callable[[str], None]:
    """``report(line)`` prints ``line`` in the summary at the end of the run."""
    return _EXTRA.append


@pytest.fixture
def interleaved_baseline() -> Callable[[Any, Callable[[], Any]], Callable[[], None]]:
    """The :func:`make_interleaved_baseline` helper, as a fixture (test modules cannot import conftest)."""
    return make_interleaved_baseline


def make_interleaved_baseline(benchmark: Any, baseline: Callable[[], Any]) -> Callable[[], None]:
    """A ``setup`` for ``benchmark.pedantic`` that times one ``baseline()`` round before each candidate round."""
    times: list[float] = benchmark.extra_info.setdefault("baseline_times", [])

    def setup() -> None:
        start = time.perf_counter()
        baseline()
        times.append(time.perf_counter() - start)

    return setup


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.3f} s"


def machine() -> str:
    """The machine the numbers come from: cores, CPU model, torch and CUDA, Python."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cuda = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA"
    return (
        f"machine: {os.cpu_count()} cores ({cpu}), torch {torch.__version__}, {cuda}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """The ``--benchmark-json`` output names the machine as the summary does (scripts/bench_chart.py reads it)."""
    machine_info["aitoolbox_machine"] = machine()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is not None and (session.benchmarks or session.disabled):
        terminalreporter.section("benchmark machine")
        terminalreporter.write_line(machine())
        if session.disabled:
            terminalreporter.write_line("timing disabled (--benchmark-disable): each benchmark ran once, no numbers")
    rows = []
    for bench in getattr(session, "benchmarks", None) or []:
        info = bench.extra_info
        if info.get("baseline_times") and bench.stats is not None and bench.stats.rounds:
            rows.append(bench)
    if not rows and not _EXTRA:
        return
    tr = terminalreporter
    tr.section("ratio to the baseline, measured interleaved in the same run")
    for bench in sorted(rows, key=lambda b: (b.extra_info["workload"], b.extra_info["candidate"])):
        info = bench.extra_info
        times = info["baseline_times"][-bench.stats.rounds :]  # warm-up rounds ran setup too
        base_min, base_med = min(times), statistics.median(times)
        line = (
            f"{info['workload']:>4}  {info['candidate']:<30} vs {info['baseline']:<22} "
            f"min {bench.stats.min / base_min:6.3f}x  median {bench.stats.median / base_med:6.3f}x"
        )
        line += f"  [{_ms(bench.stats.min)} vs {_ms(base_min)} by min]"
        steps = info.get("steps")
        if steps:
            line += f"  ({(bench.stats.min - base_min) / steps * 1e6:+.1f} us per step by min)"
        tr.write_line(line)
    for line in _EXTRA:
        tr.write_line(line)
