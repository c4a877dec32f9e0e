"""User-facing model contract: :class:`TTModel`, and :class:`ModelWrap` for plain ``nn.Module``\\ s."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from aitoolbox.loop.errors import ModelNotSupportedError, check_int

__all__ = ["AbstractModelFeedDefinition", "ModelWrap", "TTBasicModel", "TTModel", "as_ttmodel"]


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


class TTBasicModel(TTModel):
    """A :class:`TTModel` for ``forward(*inputs)`` models whose batches are ``(input_1, ..., input_k, target)``.

    Subclass it, define ``forward``, and ``get_loss``/``get_predictions`` come ready: the loss is
    ``criterion(self(*inputs), target)``, the predictions are the raw outputs (the original AIToolbox class).
    """

    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        inputs, target = split_batch(batch, None, type(self).__name__)
        assert criterion is not None  # guaranteed by TrainLoop's validation
        return criterion(self(*move_all(inputs, device)), move_all([target], device)[0])

    def get_predictions(self, batch: Any, device: torch.device) -> tuple[Any, Any, dict[str, Any] | None]:
        inputs, target = split_batch(batch, None, type(self).__name__)
        return self(*move_all(inputs, device)).cpu(), target, {}


class AbstractModelFeedDefinition(abc.ABC):
    """How a plain ``nn.Module`` is fed a batch, for :class:`ModelWrap` (the original AIToolbox contract).

    The methods are a :class:`TTModel`'s with the model as first argument.
    """

    @abc.abstractmethod
    def get_loss(
        self, model: nn.Module, batch_data: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device
    ) -> torch.Tensor:
        """Return the scalar training loss of ``model`` on ``batch_data``."""

    def get_loss_eval(
        self, model: nn.Module, batch_data: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device
    ) -> torch.Tensor:
        """The evaluation loss; by default :meth:`get_loss`."""
        return self.get_loss(model, batch_data, criterion, device)

    @abc.abstractmethod
    def get_predictions(
        self, model: nn.Module, batch_data: Any, device: torch.device
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        """Return ``(y_pred, y_true, metadata)`` for ``batch_data``."""


class ModelWrap(TTModel):
    """Adapts a plain ``nn.Module`` to :class:`TTModel`, by a feed definition or for ``(inputs..., target)`` batches.

    With ``batch_model_feed_def`` (an :class:`AbstractModelFeedDefinition`, or any object with its methods) the loss
    and predictions are what it computes from ``(module, batch, ...)``. Without, batches are
    ``(input_1, ..., input_k, target)``: the loss is ``criterion(module(input_1, ..., input_k), target)`` and the
    predictions are the module's raw outputs (e.g. logits; result packages take the argmax where needed). ``TrainLoop``
    wraps plain modules this way automatically. Checkpoints hold the module's ``state_dict`` under ``module.``.

    Args:
        module: the model to adapt.
        batch_model_feed_def: how to feed it (the original AIToolbox's ``ModelWrap(model, feed_def)``).
        num_inputs: without a feed definition, how many leading batch elements are inputs (``None``: all but the last).
        model: the original's name of ``module`` (``ModelWrap(model=net, batch_model_feed_def=feed)``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = ModelWrap(nn.Linear(3, 2))
        >>> batch = (torch.ones(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> loss = model.get_loss(batch, nn.CrossEntropyLoss(), torch.device("cpu"))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        module: nn.Module | None = None,
        batch_model_feed_def: Any = None,
        *,
        num_inputs: int | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if model is not None:  # the original's keyword: ModelWrap(model=..., batch_model_feed_def=...)
            if module is not None:
                raise ModelNotSupportedError("ModelWrap takes the module once: as module (or model=), not both")
            module = model
        if not isinstance(module, nn.Module):
            raise ModelNotSupportedError(f"ModelWrap needs an nn.Module, got {type(module).__name__}")
        check_int("num_inputs", num_inputs, 1, optional=True, expected="a positive int")
        if batch_model_feed_def is not None:
            missing = [
                m for m in ("get_loss", "get_predictions") if not callable(getattr(batch_model_feed_def, m, None))
            ]
            if missing:
                raise ModelNotSupportedError(
                    "batch_model_feed_def must define get_loss(model, batch, criterion, device) and "
                    "get_predictions(model, batch, device) (subclass AbstractModelFeedDefinition); "
                    f"{type(batch_model_feed_def).__name__} lacks {missing}"
                )
            if num_inputs is not None:
                raise ModelNotSupportedError(
                    "num_inputs applies only without a batch_model_feed_def; pass one or the other"
                )
        self.module = module
        self.batch_model_feed_def = batch_model_feed_def
        self.num_inputs = num_inputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        if self.batch_model_feed_def is not None:
            return self.batch_model_feed_def.get_loss(self.module, batch, criterion, device)  # type: ignore[no-any-return]
        inputs, target = split_batch(batch, self.num_inputs, type(self.module).__name__)
        assert criterion is not None  # guaranteed by TrainLoop's validation
        return criterion(self.module(*inputs), target)

    def get_loss_eval(
        self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device
    ) -> torch.Tensor:
        feed = self.batch_model_feed_def
        if feed is not None and callable(getattr(feed, "get_loss_eval", None)):
            return feed.get_loss_eval(self.module, batch, criterion, device)  # type: ignore[no-any-return]
        return self.get_loss(batch, criterion, device)

    def get_predictions(self, batch: Any, device: torch.device) -> tuple[Any, Any, dict[str, Any] | None]:
        if self.batch_model_feed_def is not None:
            return self.batch_model_feed_def.get_predictions(self.module, batch, device)  # type: ignore[no-any-return]
        inputs, target = split_batch(batch, self.num_inputs, type(self.module).__name__)
        return self.module(*inputs), target, None


def split_batch(batch: Any, num_inputs: int | None, model_name: str) -> tuple[Sequence[Any], Any]:
    """``(inputs, target)`` of an ``(input_1, ..., input_k, target)`` batch, or a clear error for another layout."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ModelNotSupportedError(
            f"{model_name}: batches must be (inputs..., target) tuples or lists, got {type(batch).__name__}; "
            "subclass TTModel (or give ModelWrap a batch_model_feed_def) to handle other batch layouts"
        )
    n = len(batch) - 1 if num_inputs is None else num_inputs
    return batch[:n], batch[-1]


def move_all(items: Sequence[Any], device: torch.device) -> list[Any]:
    """Each item of ``items`` on ``device``: tensors ``non_blocking``, other objects with a ``.to(device)`` too (as
    the original moved every batch element); the rest unchanged."""
    return [
        x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x.to(device) if hasattr(x, "to") else x
        for x in items
    ]


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
