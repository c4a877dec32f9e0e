"""Small, deterministic models and data for tests, examples and benchmarks (no downloads, CPU-fast).

Example:
    >>> from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
    >>> loader = make_classification_loader(64, batch_size=16, seed=0)
    >>> x, y = next(iter(loader))
    >>> tuple(x.shape), tuple(TinyClassifier()(x).shape)
    ((16, 8), (16, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop.model import TTModel

__all__ = ["TinyClassifier", "make_classification_data", "make_classification_loader"]


def make_classification_data(n: int, n_features: int = 8, n_classes: int = 3, seed: int = 0) -> TensorDataset:
    """A learnable classification set: the label is the argmax of a fixed random projection of the features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    w = torch.randn(n_features, n_classes, generator=torch.Generator().manual_seed(1234))
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x, y)


def make_classification_loader(
    n: int,
    *,
    batch_size: int = 16,
    shuffle: bool = False,
    seed: int = 0,
    n_features: int = 8,
    n_classes: int = 3,
    **loader_kwargs: Any,
) -> DataLoader[Any]:
    """A DataLoader over :func:`make_classification_data`."""
    return DataLoader(
        make_classification_data(n, n_features, n_classes, seed),
        batch_size=batch_size,
        shuffle=shuffle,
        **loader_kwargs,
    )


class TinyClassifier(TTModel):
    """A two-layer MLP TTModel for ``(x, y)`` batches; predictions are class indices.

    ``dropout > 0`` makes training draw from the global RNG (what exact-resume tests need).
    """

    def __init__(self, n_features: int = 8, n_classes: int = 3, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.drop(x))  # type: ignore[no-any-return]

    def get_loss(self, batch: Any, criterion: Callable[..., torch.Tensor] | None, device: torch.device) -> torch.Tensor:
        x, y = batch
        assert criterion is not None
        return criterion(self(x.to(device)), y.to(device))

    def get_predictions(self, batch: Any, device: torch.device) -> tuple[Any, Any, dict[str, Any] | None]:
        x, y = batch
        return self(x.to(device)).argmax(dim=1), y, {"row_sum": x.sum(dim=1)}
