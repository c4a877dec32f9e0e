"""The gradient callbacks, under the original AIToolbox module path, with its argument names."""

from __future__ import annotations

import logging
from typing import Any

import torch

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.callbacks import GradNormClip as _GradNormClip
from aitoolbox.loop.callbacks import GradValueClip as _GradValueClip

__all__ = ["GradNormClip", "GradValueClip", "GradientCallbackBase", "GradientStatsPrint"]

logger = logging.getLogger(__name__)


def _one(new: Any, old: Any, new_name: str, old_name: str) -> Any:
    if (new is None) == (old is None):
        raise LoopConfigError(f"give {new_name}= (or the original's {old_name}=), exactly one of them")
    return new if new is not None else old


class GradNormClip(_GradNormClip):
    """Clip the gradients' total norm before each optimizer step: ``GradNormClip(max_norm=1.0)``
    (``max_grad_norm=`` is the original AIToolbox spelling; ``norm_type`` as in ``clip_grad_norm_``)."""

    def __init__(self, max_norm: float | None = None, norm_type: float = 2.0, *, max_grad_norm: float | None = None):
        super().__init__(_one(max_norm, max_grad_norm, "max_norm", "max_grad_norm"), norm_type)


class GradValueClip(_GradValueClip):
    """Clip every gradient value to ``[-clip_value, clip_value]`` (``max_grad_value=``: the original spelling)."""

    def __init__(self, clip_value: float | None = None, *, max_grad_value: float | None = None) -> None:
        super().__init__(_one(clip_value, max_grad_value, "clip_value", "max_grad_value"))


class GradientCallbackBase(Callback):
    """Base of callbacks that act on the gradients before each optimizer step (override
    ``on_after_gradient_update(optimizer_idx)``)."""

    stops_mid_epoch = False


class GradientStatsPrint(GradientCallbackBase):
    """Log, per layer, the mean, standard deviation and share of zeros of the gradients of the last optimizer step:
    at every epoch end, or after every step with ``on_every_grad_update=True``.

    The statistics are computed on the device at every step (no host sync) and read at the report, one sync per
    report.

    Args:
        model_layers_extract_def: ``fn(model) -> list of layers`` whose gradients are reported (default: the whole
            model as one layer).
        on_every_grad_update: report after every optimizer step instead of at epoch ends.
    """

    def __init__(self, model_layers_extract_def: Any = None, on_every_grad_update: bool = False) -> None:
        super().__init__("Print model gradient stats")
        self.model_layers_extract_def = model_layers_extract_def
        self.on_every_grad_update = on_every_grad_update
        self.last: list[torch.Tensor] = []

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        if optimizer_idx:
            return
        tl = self.train_loop_obj
        layers = [tl.model] if self.model_layers_extract_def is None else self.model_layers_extract_def(tl.model)
        stats = []
        for layer in layers:
            grads = [p.grad.detach().reshape(-1) for p in layer.parameters() if p.grad is not None]
            if grads:
                flat = torch.cat(grads).float()
                stats.append(torch.stack([flat.mean(), flat.std(unbiased=False), (flat == 0).float().mean()]))
        self.last = stats
        if self.on_every_grad_update:
            self.report()

    def on_epoch_end(self) -> None:
        if not self.on_every_grad_update:
            self.report()

    def report(self) -> None:
        """Log the statistics of the last step (one host read)."""
        if not self.last:
            return
        values = torch.stack(self.last).cpu().tolist()
        lines = ["---> Model layers gradients stats"]
        for i, (mean, std, zeros) in enumerate(values):
            lines.append(f"Layer {i} grads: Mean: {mean}; Std {std}\n\tRatio of zero gradients: {zeros}")
        logger.info("%s", "\n".join(lines))
