"""Gradient clipping, applied after the gradients are complete (and unscaled under fp16) and before each step."""

from __future__ import annotations

import torch

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.strategy import Strategy

__all__ = ["GradNormClip", "GradValueClip"]


class _GradClip(Callback):
    def __init__(self) -> None:
        super().__init__()
        self._params: list[list[torch.Tensor]] = []
        self._strategy = Strategy()

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        self._params = [[p for g in opt.param_groups for p in g["params"]] for opt in tl.optimizers]
        self._strategy = tl.strategy  # clipping over every rank's shard is the strategy's


class GradNormClip(_GradClip):
    """Clip the total gradient norm of each optimizer's parameters (``torch.nn.utils.clip_grad_norm_``, through the
    loop's :class:`~aitoolbox.loop.Strategy`).

    The norm is computed on the device; nothing is read back to the host.

    Args:
        max_norm: the maximum total norm.
        norm_type: the p of the p-norm (``float('inf')`` for the max norm).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=5, callbacks=[GradNormClip(max_norm=1.0)])
    """

    stops_mid_epoch = False

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        super().__init__()
        if not isinstance(max_norm, (int, float)) or max_norm <= 0:
            raise LoopConfigError(f"max_norm must be a number > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        self._strategy.clip_grad_norm_(self._params[optimizer_idx], self.max_norm, self.norm_type)


class GradValueClip(_GradClip):
    """Clamp every gradient element into ``[-clip_value, clip_value]`` (``torch.nn.utils.clip_grad_value_``).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=5, callbacks=[GradValueClip(clip_value=0.5)])
    """

    stops_mid_epoch = False

    def __init__(self, clip_value: float) -> None:
        super().__init__()
        if not isinstance(clip_value, (int, float)) or clip_value <= 0:
            raise LoopConfigError(f"clip_value must be a number > 0, got {clip_value!r}")
        self.clip_value = float(clip_value)

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        self._strategy.clip_grad_value_(self._params[optimizer_idx], self.clip_value)
