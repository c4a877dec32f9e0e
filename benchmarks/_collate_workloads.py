"""The collation workloads of the fastcollate benchmarks, shared with the THP and GPU scripts.

(a) 64 / 256 samples of (float32 [3, 224, 224], int); (b) 256 uint8 numpy HWC [224, 224, 3] images;
(c) 1,024 samples of (float32 [32], int); (d) 64 int64 token sequences of length 16-512, padded;
(e) 256 dict samples {float32 [128], int, float}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


def samples(workload: str) -> list[Any]:
    g = torch.Generator().manual_seed(0)
    if workload in ("a64", "a256"):
        return [(torch.randn(3, 224, 224, generator=g), i) for i in range(int(workload[1:]))]
    if workload == "b":
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(256)]
    if workload == "c":
        return [(torch.randn(32, generator=g), i) for i in range(1024)]
    if workload == "d":
        lengths = torch.randint(16, 513, (64,), generator=g)
        return [torch.randint(0, 30000, (int(n),), generator=g) for n in lengths]
    if workload == "e":
        return [{"x": torch.randn(128, generator=g), "y": i, "z": i / 3} for i in range(256)]
    raise ValueError(workload)


class Cycled(Dataset[Any]):
    """``n`` samples cycling through ``items`` (cached: a loader over it is bound by collation and hand-over)."""

    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.items[i % len(self.items)]


def python_pad_collate(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The usual hand-written collate_fn for variable-length sequences: pad_sequence, lengths and a mask."""
    data = pad_sequence(batch, batch_first=True, padding_value=0)
    lengths = torch.tensor([len(s) for s in batch])
    mask = torch.arange(data.shape[1])[None, :] < lengths[:, None]
    return data, lengths, mask


def collate_fns(workload: str) -> tuple[Callable[[list[Any]], Any], Callable[[list[Any]], Any]]:
    """(baseline, candidate) collate functions for a workload."""
    from torch.utils.data import default_collate

    import fastcollate

    if workload == "d":
        return python_pad_collate, fastcollate.pad_collate
    return default_collate, fastcollate.collate


def assert_equal(got: Any, expected: Any) -> None:
    """Structural equality (tensors by dtype, shape and value)."""
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape and torch.equal(got, expected)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_equal(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_equal(g, e)
    else:
        assert got == expected
