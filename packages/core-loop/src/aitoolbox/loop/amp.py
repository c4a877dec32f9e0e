"""Mixed-precision settings: which ``torch.autocast`` dtype to use, and whether a ``GradScaler`` is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["AmpConfig", "resolve_amp"]

_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


@dataclass(frozen=True)
class AmpConfig:
    """Resolved AMP settings.

    Attributes:
        dtype: the autocast dtype, or ``None`` when AMP is off.
        use_grad_scaler: True for float16 on CUDA, where small gradients would underflow without loss scaling.
    """

    dtype: torch.dtype | None
    use_grad_scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


def resolve_amp(use_amp: Any, device: torch.device) -> AmpConfig:
    """Turn the user's ``use_amp`` into an :class:`AmpConfig`.

    Accepted values: ``False``/``None`` (off); ``True`` (float16 with a GradScaler on CUDA, as in the original
    AIToolbox; bfloat16 on CPU, where float16 autocast is slow); ``'bf16'``/``'bfloat16'``/``torch.bfloat16``;
    ``'fp16'``/``'float16'``/``torch.float16``; or a dict ``{'dtype': ..., 'grad_scaler': bool}``.

    Example:
        >>> import torch
        >>> resolve_amp("bf16", torch.device("cpu"))
        AmpConfig(dtype=torch.bfloat16, use_grad_scaler=False)
    """
    grad_scaler: bool | None = None
    spec = use_amp
    if isinstance(use_amp, dict):
        unknown = set(use_amp) - {"dtype", "grad_scaler"}
        if unknown:
            raise LoopConfigError(f"use_amp dict accepts the keys 'dtype' and 'grad_scaler', got {sorted(unknown)}")
        spec = use_amp.get("dtype", True)
        grad_scaler = use_amp.get("grad_scaler")
    if spec is None or spec is False:
        return AmpConfig(None, False)
    if spec is True:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif isinstance(spec, torch.dtype) and spec in (torch.float16, torch.bfloat16):
        dtype = spec
    elif isinstance(spec, str) and spec.lower() in _NAMES:
        dtype = _NAMES[spec.lower()]
    else:
        raise LoopConfigError(
            f"use_amp must be False, True, 'bf16' or 'fp16' (or torch.bfloat16 / torch.float16), got {use_amp!r}"
        )
    if grad_scaler is None:
        grad_scaler = dtype == torch.float16 and device.type == "cuda"
    return AmpConfig(dtype, bool(grad_scaler))
