"""User-facing model contract: :class:`TTModel`, and :class:`ModelWrap` for plain ``nn.Module``\\ s."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from aitoolbox.loop.errors import ModelNotSupportedError, check_int

__all__ = ["ModelWrap", "TTModel", "as_ttmodel"]


class TTModel(nn.Module, abc.ABC):
    """An ``nn.Module`` that knows how to compute its training loss and its predictions from a batch.

    Define ``__init__`` and ``forward`` exactly as in plain PyTorch, then add the two methods below. The batch is
    whatever the DataLoader yields; move the tensors you use to ``device`` (a no-op when the loop already did).

    Example:
        .. code-block:: python

            class CNNModel(TTModel):
                def __init__(self):
                    super().__init__()
                    self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.LogSoftmax(dim=1))

                def forward(self, x):
                    return self.net(x)

                def get_loss(self, batch, criterion, device):
                    x, y = batch
                    return criterion(self(x.to(device)), y.to(device))

                def get_predictions(self, batch, device):
                    x, y = batch
                    return self(x.to(device)).argmax(dim=1).cpu(), y, None
    """

    @abc.abstractmethod
    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        """Return the scalar training loss of ``batch``.

        Args:
            batch: one batch, as yielded by the training DataLoader (already on ``device`` when it holds tensors).
            criterion: the loss function given to the TrainLoop.
            device: the device the model lives on.

        Returns:
            A 0-dim tensor; the loop calls ``backward()`` on it.
        """

    def get_loss_eval(
        self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device
    ) -> torch.Tensor:
        """Return the evaluation loss of ``batch``; defaults to :meth:`get_loss`. Runs under ``torch.no_grad()``."""
        return self.get_loss(batch, criterion, device)

    @abc.abstractmethod
    def get_predictions(self, batch: Any, device: torch.device) -> tuple[Any, Any, dict[str, Any] | None]:
        """Return ``(y_pred, y_true, metadata)`` for ``batch``.

        ``y_pred`` and ``y_true`` are tensors (or arrays) whose first dimension is the batch; the loop concatenates
        them over the whole dataset. ``metadata`` is ``None`` or a dict whose values are lists or tensors, one entry
        per example; they are concatenated per key.
        """


class ModelWrap(TTModel):
    """Adapts a plain ``nn.Module`` whose batches are ``(input_1, ..., input_k, target)`` to :class:`TTModel`.

    The loss is ``criterion(module(input_1, ..., input_k), target)`` and the predictions are the module's raw outputs
    (e.g. logits or log-probabilities; result packages take the argmax where needed). ``TrainLoop`` wraps plain modules
    automatically; use this class directly only to change ``num_inputs``.

    Args:
        module: the model to adapt.
        num_inputs: how many leading batch elements are inputs; ``None`` means all but the last.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = ModelWrap(nn.Linear(3, 2))
        >>> batch = (torch.ones(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> loss = model.get_loss(batch, nn.CrossEntropyLoss(), torch.device("cpu"))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, module: nn.Module, *, num_inputs: int | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ModelNotSupportedError(f"ModelWrap needs an nn.Module, got {type(module).__name__}")
        check_int("num_inputs", num_inputs, 1, optional=True, expected="a positive int")
        self.module = module
        self.num_inputs = num_inputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def _split(self, batch: Any) -> tuple[Sequence[Any], Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ModelNotSupportedError(
                f"{type(self.module).__name__} is a plain nn.Module, so batches must be (inputs..., target) "
                f"tuples or lists, got {type(batch).__name__}; subclass TTModel to handle other batch layouts"
            )
        n = len(batch) - 1 if self.num_inputs is None else self.num_inputs
        return batch[:n], batch[-1]

    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        inputs, target = self._split(batch)
        assert criterion is not None  # guaranteed by TrainLoop's validation
        return criterion(self.module(*inputs), target)

    def get_predictions(self, batch: Any, device: torch.device) -> tuple[Any, Any, dict[str, Any] | None]:
        inputs, target = self._split(batch)
        return self.module(*inputs), target, None


def as_ttmodel(model: object) -> TTModel:
    """Return ``model`` if it is a :class:`TTModel`, wrap it in :class:`ModelWrap` if it is a plain ``nn.Module``.

    Raises:
        ModelNotSupportedError: for anything else.
    """
    if isinstance(model, TTModel):
        return model
    if isinstance(model, nn.Module):
        return ModelWrap(model)
    raise ModelNotSupportedError(
        f"model must be a TTModel (aitoolbox.torchtrain.model.TTModel) or a torch.nn.Module, "
        f"got {type(model).__module__}.{type(model).__qualname__}; define it as "
        "`class MyModel(TTModel)` with get_loss() and get_predictions()"
    )
