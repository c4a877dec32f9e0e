"""Capture and restore every random generator a training run uses: Python, NumPy, torch CPU and CUDA."""

from __future__ import annotations

import random
from typing import Any

import torch

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's (when installed), torch's CPU and (when initialised) CUDA generators.

    The result holds tensors and plain data only, so it loads with ``torch.load(weights_only=True)``.

    Example:
        >>> import torch
        >>> state = capture_rng_state()
        >>> a = torch.rand(2)
        >>> restore_rng_state(state)
        >>> torch.equal(torch.rand(2), a)
        True
    """
    version, internal, gauss = random.getstate()
    cuda_up = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda_up else [],
        "numpy": None,
    }
    try:
        import numpy as np
    except ImportError:
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = [name, torch.from_numpy(np.asarray(keys).astype("int64")), int(pos), int(has_gauss), float(cached)]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA states for at most the devices present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for idx, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, idx)
    if state.get("numpy") is not None:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))
