"""Datasets for the slot-loader tests, in a module of their own so that spawned workers can import them."""

from __future__ import annotations

import collections
import os
import signal
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

Pair = collections.namedtuple("Pair", ["image", "label"])


class Items(Dataset[Any]):
    """Item ``i`` is ``items[i]`` (whole prepared batches with ``batch_size=None``, or samples)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class Numbered(Dataset[Any]):
    """Sample ``i`` of a given kind, with values that name ``i`` (so a batch overwritten later is seen)."""

    def __init__(self, n: int, kind: str = "tuple", features: int = 4096) -> None:
        self.n, self.kind, self.features = n, kind, features

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        x = torch.full((self.features,), float(i))
        if self.kind == "tuple":
            return x, i
        if self.kind == "dict":
            return {"x": x, "y": i, "w": i / 4, "name": f"s{i}"}
        if self.kind == "namedtuple":
            return Pair(x.view(4, -1), i)
        if self.kind == "numpy":
            return np.full((16, 16, 3), i % 256, dtype=np.uint8), np.int64(i)
        if self.kind == "sequence":
            return torch.arange(1 + i % 9, dtype=torch.int64) + i
        raise ValueError(self.kind)


class Ragged(Dataset[Any]):
    """Sample 5 is longer than the others."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> Any:
        return torch.zeros(6 if i == 5 else 4)


class KillsItsWorker(Dataset[Any]):
    """Sample ``at`` kills the worker that loads it (SIGKILL)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> Any:
        if i == self.at and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.full((1024,), float(i))


class Stream(IterableDataset[Any]):
    """``n`` samples, split between the workers by worker id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(start, self.n, step):
            yield torch.full((2048,), float(i)), i


def mark_worker(worker_id: int) -> None:
    """A worker_init_fn whose effect the batches show."""
    torch.manual_seed(1000 + worker_id)


class Noisy(Dataset[Any]):
    """Samples drawn from torch's generator (seeded per worker by ``mark_worker``)."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> Any:
        return torch.rand(1024), i
