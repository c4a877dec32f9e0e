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
        if key.startswith("workers="):
            report(
                f"   a  {key}: fastcollate pinned {row['fastcollate (pinned) batches/s']:.1f} batches/s vs "
                f"default_collate + pin_memory {row['default_collate+pin_memory batches/s']:.1f}: "
                f"{row['speedup (by min)']:.2f}x ({result['device']})"
            )
