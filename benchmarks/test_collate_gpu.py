"""On CUDA: the pinned-memory comparison of ``collate_pinned_gpu.py`` (workload (a)), reported as ratios."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

sys.path.insert(0, str(pathlib.Path(__file__).parent))


def test_pinned_collate_into_the_gpu(report: Any) -> None:
    from collate_pinned_gpu import main

    result = main()
    for key, row in result.items():
        if " workers=" in key:
            ratios = ", ".join(
                f"{name[: -len(' speedup (by min)')]} {value:.2f}x"
                for name, value in row.items()
                if name.endswith("speedup (by min)") and not name.startswith("default_collate")
            )
            base = row["default_collate+pin_memory batches/s"]
            report(f"{key}: vs default_collate + pin_memory ({base:.1f} batches/s): {ratios} ({result['device']})")
