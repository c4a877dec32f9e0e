"""Model contract: define models as :class:`TTModel`, or adapt a plain ``nn.Module`` with :class:`ModelWrap`
(``ModelWrap(model)`` for ``(inputs..., target)`` batches, ``ModelWrap(model, feed_definition)`` otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aitoolbox.loop.model import ModelWrap, TTBasicModel, TTModel, move_all, split_batch

__all__ = ["ModelWrap", "MultiGPUModelWrap", "TTBasicModel", "TTModel"]


class MultiGPUModelWrap(TTBasicModel):
    """Wraps a plain model so that the loss is computed inside ``forward`` (the original's DataParallel helper).

    ``forward(*inputs, targets=None, criterion=None)`` returns the loss when given a criterion, else the predictions.
    With DDP (this project's multi-GPU path) it brings no speed-up; it is kept so that scripts using it still run.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"MultiGPUModelWrap needs an nn.Module, got {type(model).__name__}")
        self.model = model

    def forward(
        self, *input_data: Any, targets: Any = None, criterion: Callable[..., torch.Tensor] | None = None
    ) -> Any:
        predictions = self.model(*input_data)
        return predictions if criterion is None else criterion(predictions, targets)

    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        inputs, target = split_batch(batch, None, type(self).__name__)
        target_on_device = move_all([target], device)[0]
        return self(*move_all(inputs, device), targets=target_on_device, criterion=criterion)  # type: ignore[no-any-return]
