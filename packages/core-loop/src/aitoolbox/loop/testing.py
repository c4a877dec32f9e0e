"""Small, deterministic models and data for tests, examples and benchmarks (no downloads, CPU-fast).

Example:
    >>> from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
    >>> loader = make_classification_loader(64, batch_size=16, seed=0)
    >>> x, y = next(iter(loader))
    >>> tuple(x.shape), tuple(TinyClassifier()(x).shape)
    ((16, 8), (16, 3))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop.model import TTModel
from aitoolbox.loop.strategy import Strategy, SyncOff

__all__ = ["HalvesStrategy", "TinyClassifier", "make_classification_data", "make_classification_loader"]


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


class HalvesStrategy(Strategy):
    """A fake sharded strategy, in one process: each tensor's state lives as two halves (the shards of a pretend
    world of two); full state dicts are joined from them. It counts every call (``calls``, ``sync_off_entered``), so
    tests can check that the loop and its extensions go through the strategy."""

    name = "halves"
    every_rank_writes = True

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.sync_off_entered = 0

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    @staticmethod
    def _split(state: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] >= 2:
                out[f"{k}#0"], out[f"{k}#1"] = (t.clone() for t in torch.tensor_split(v, 2))
            else:
                out[k] = v
        return out

    @staticmethod
    def _join(shards: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in shards.items():
            if k.endswith("#0"):
                out[k[:-2]] = torch.cat([v, shards[k[:-2] + "#1"]])
            elif not k.endswith("#1"):
                out[k] = v
        return out

    def sync_off(self) -> SyncOff:
        @contextlib.contextmanager
        def off() -> Iterator[None]:
            self.sync_off_entered += 1
            yield

        return off

    def model_state_dict(self, model: nn.Module, *, full: bool = True) -> dict[str, Any]:
        self._count(f"model_state_dict(full={full})")
        shards = self._split(model.state_dict())
        return self._join(shards) if full else shards

    def load_model_state_dict(self, model: nn.Module, state: Mapping[str, Any], *, full: bool = True) -> None:
        self._count(f"load_model_state_dict(full={full})")
        model.load_state_dict(self._join(self._split(state)) if full else self._join(state))

    def optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, full: bool = True
    ) -> dict[str, Any]:
        self._count(f"optimizer_state_dict(full={full})")
        return super().optimizer_state_dict(model, optimizer, full=full)

    def load_optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], *, full: bool = True
    ) -> None:
        self._count(f"load_optimizer_state_dict(full={full})")
        super().load_optimizer_state_dict(model, optimizer, state, full=full)

    def clip_grad_norm_(
        self, parameters: Sequence[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> torch.Tensor:
        self._count("clip_grad_norm_")
        return super().clip_grad_norm_(parameters, max_norm, norm_type)

    def clip_grad_value_(self, parameters: Sequence[torch.Tensor], clip_value: float) -> None:
        self._count("clip_grad_value_")
        super().clip_grad_value_(parameters, clip_value)
