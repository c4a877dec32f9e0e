from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_cpu_unless_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed torch; tests not marked ``gpu`` train on the CPU even where CUDA exists (their references are CPU runs)."""
    torch.manual_seed(0)
    if "gpu" not in request.keywords:
        import aitoolbox.loop.train_loop as train_loop

        original = train_loop.resolve_device
        monkeypatch.setattr(train_loop, "resolve_device", lambda d, i=None: original("cpu" if d is None else d, i))
