"""Predictions and loss of a model over a DataLoader, without training: :class:`ModelPredictor`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from aitoolbox.loop._device import resolve_device
from aitoolbox.loop._evaluation import evaluate_loss_sum, predict
from aitoolbox.loop.amp import resolve_amp
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.model import TTModel, as_ttmodel

__all__ = ["ModelPredictor"]


class ModelPredictor:
    """Run a trained model over ``data_loader``: predictions (``model.get_predictions``) and the loss
    (``model.get_loss_eval``), in eval mode, without gradients, the global RNG untouched.

    Args:
        model: a :class:`~aitoolbox.loop.TTModel` or a plain ``nn.Module`` with ``(inputs..., target)`` batches.
        data_loader: the batches to predict on.
        device: where to run (default: ``cuda`` when available, else ``cpu``); the model is moved there.
        use_amp: as for :class:`~aitoolbox.loop.TrainLoop`.

    Example:
        .. code-block:: python

            y_pred, y_true, metadata = ModelPredictor(model, test_loader).model_predict()
    """

    def __init__(
        self,
        model: TTModel | nn.Module,
        data_loader: Iterable[Any],
        device: str | torch.device | None = None,
        use_amp: Any = False,
    ) -> None:
        if data_loader is None or not hasattr(data_loader, "__iter__"):
            raise LoopConfigError(f"data_loader must be an iterable of batches (a DataLoader), got {data_loader!r}")
        self.model = model
        self.tt_model = as_ttmodel(model)
        self.data_loader = data_loader
        self.device = resolve_device(device, None)
        self.amp = resolve_amp(use_amp, self.device)
        self.tt_model.to(self.device)

    def model_predict(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the whole loader, concatenated on the CPU."""
        return predict(self.tt_model, self.data_loader, self.device, self.amp)

    def model_get_loss(self, loss_criterion: Callable[..., torch.Tensor] | None) -> float:
        """The loss over the loader, weighted by batch size."""
        total, count = evaluate_loss_sum(self.tt_model, self.data_loader, loss_criterion, self.device, self.amp)
        if not count:
            raise LoopConfigError("data_loader yielded no batches, so the loss is undefined")
        return total / count
