"""Mixed-precision settings: which ``torch.autocast`` dtype to use, and whether a ``GradScaler`` is needed."""

from __future__ import annotations

from dataclasses import dataclass, field
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


#: ``torch.amp.GradScaler`` settings (also the keys of AIToolbox 1.8's ``use_amp`` dict)
SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
#: keys of the apex-era ``use_amp`` dicts (``amp.initialize`` options), refused with the replacement
_APEX_KEYS = set(
    "opt_level loss_scale keep_batchnorm_fp32 cast_model_type patch_torch_functions master_weights num_losses "
    "min_loss_scale max_loss_scale verbosity".split()
)


@dataclass(frozen=True)
class AmpConfig:
    """Resolved AMP settings.

    Attributes:
        dtype: the autocast dtype, or ``None`` when AMP is off.
        use_grad_scaler: True for float16 on CUDA, where small gradients would underflow without loss scaling.
        scaler_options: keyword arguments of the ``GradScaler`` (``init_scale``, ``growth_factor``...).
    """

    dtype: torch.dtype | None
    use_grad_scaler: bool
    scaler_options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


def resolve_amp(use_amp: Any, device: torch.device) -> AmpConfig:
    """Turn the user's ``use_amp`` into an :class:`AmpConfig`.

    Accepted values: ``False``/``None`` (off); ``True`` (float16 with a GradScaler on CUDA, as in the original
    AIToolbox; bfloat16 on CPU, where float16 autocast is slow); ``'bf16'``/``'bfloat16'``/``torch.bfloat16``;
    ``'fp16'``/``'float16'``/``torch.float16``; a dict ``{'dtype': ..., 'grad_scaler': True | False | {settings}}``
    (settings: ``init_scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``); or AIToolbox 1.8's dict
    of those settings alone (float16 with a GradScaler made with them, where a scaler is used: CUDA).

    Raises:
        LoopConfigError: an unknown value or key; scaler settings where no scaler runs (bfloat16, off, or the 1.8
            dict on the CPU); an apex-era dict (``opt_level``...), naming the replacement.

    Example:
        >>> import torch
        >>> resolve_amp("bf16", torch.device("cpu"))
        AmpConfig(dtype=torch.bfloat16, use_grad_scaler=False, scaler_options={})
        >>> resolve_amp({"init_scale": 1024.0}, torch.device("cuda")).scaler_options
        {'init_scale': 1024.0}
    """
    if isinstance(use_amp, dict):
        return _resolve_dict(use_amp, device)
    return _resolve(use_amp, None, device, use_amp)


def _resolve(spec: Any, grad_scaler: Any, device: torch.device, given: Any) -> AmpConfig:
    if spec is None or spec is False:
        if grad_scaler:
            raise LoopConfigError(f"use_amp={given!r}: a GradScaler needs float16 AMP; add 'dtype': 'fp16'")
        return AmpConfig(None, False)
    if spec is True:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif isinstance(spec, torch.dtype) and spec in (torch.float16, torch.bfloat16):
        dtype = spec
    elif isinstance(spec, str) and spec.lower() in _NAMES:
        dtype = _NAMES[spec.lower()]
    else:
        raise LoopConfigError(
            f"use_amp must be False, True, 'bf16' or 'fp16' (or torch.bfloat16 / torch.float16), got {given!r}"
        )
    options: dict[str, Any] = {}
    if isinstance(grad_scaler, dict):
        options = _scaler_options(grad_scaler, given)
        if dtype != torch.float16:
            raise LoopConfigError(
                f"use_amp={given!r}: GradScaler settings apply to float16, and this run autocasts to {dtype} (which "
                "needs no loss scaling); drop 'grad_scaler', or use 'dtype': 'fp16'"
            )
        grad_scaler = True
    if grad_scaler is None:
        grad_scaler = dtype == torch.float16 and device.type == "cuda"
    elif not isinstance(grad_scaler, bool):
        message = f"use_amp['grad_scaler'] must be True, False or a dict of GradScaler settings, got {grad_scaler!r}"
        raise LoopConfigError(message)
    return AmpConfig(dtype, grad_scaler, options)


def _scaler_options(options: dict[str, Any], given: Any) -> dict[str, Any]:
    unknown = sorted(set(options) - set(SCALER_OPTIONS))
    if unknown:
        raise LoopConfigError(f"use_amp={given!r}: GradScaler settings are {list(SCALER_OPTIONS)}, got {unknown}")
    return dict(options)


def _resolve_dict(use_amp: dict[str, Any], device: torch.device) -> AmpConfig:
    apex = sorted(set(use_amp) & _APEX_KEYS)
    if apex:
        raise LoopConfigError(
            f"use_amp={use_amp!r} is an apex amp.initialize setting ({', '.join(apex)}), from AIToolbox before 1.8; "
            "apex is not used: use_amp=True (float16 + GradScaler on CUDA, bfloat16 on the CPU), 'fp16' or 'bf16'"
        )
    if use_amp and set(use_amp) <= set(SCALER_OPTIONS):  # AIToolbox 1.8: GradScaler settings, float16 implied
        if device.type != "cuda":
            raise LoopConfigError(
                f"use_amp={use_amp!r} (AIToolbox 1.8's GradScaler settings) means float16 with loss scaling, which "
                "runs on CUDA; on the CPU use use_amp=True or 'bf16' (bfloat16 needs no scaler)"
            )
        return AmpConfig(torch.float16, True, dict(use_amp))
    unknown = set(use_amp) - {"dtype", "grad_scaler"}
    if unknown:
        raise LoopConfigError(
            f"use_amp dict accepts the keys 'dtype' and 'grad_scaler' (or GradScaler settings {list(SCALER_OPTIONS)}),"
            f" got {sorted(unknown)}"
        )
    return _resolve(use_amp.get("dtype", True), use_amp.get("grad_scaler"), device, use_amp)
