"""The benchmarks' scale. Full by default; ``AITB_BENCH_QUICK=1`` shrinks the workloads (sizes, steps, repeats) so
that CI runs every benchmark once (``--benchmark-disable``) in seconds: it proves that they run, not how fast."""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

QUICK = os.environ.get("AITB_BENCH_QUICK", "") not in ("", "0")


def scaled(full: T, quick: T) -> T:
    """``quick`` under ``AITB_BENCH_QUICK=1``, else ``full``."""
    return quick if QUICK else full
