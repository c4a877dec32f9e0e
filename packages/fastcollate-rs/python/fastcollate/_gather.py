"""A batched gather for in-memory tensor datasets: one call per batch instead of one ``__getitem__`` per sample."""

from __future__ import annotations

import collections.abc
import operator

import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler

from fastcollate import _buffers, _native
from fastcollate._config import copy_threads
from fastcollate.errors import CollateShapeError, CollateTypeError

__all__ = ["BatchedTensorDataset", "batch_sampler"]


class BatchedTensorDataset(Dataset[tuple[torch.Tensor, ...]]):
    """Like ``TensorDataset``, but indexing with a list of indices returns the whole batch in one copy.

    Use it with a batch sampler and ``batch_size=None`` so that the DataLoader passes each batch's index list
    straight to ``__getitem__`` (no per-sample calls, no collate)::

        loader = DataLoader(dataset, batch_size=None, sampler=fastcollate.batch_sampler(dataset, 64, shuffle=True))

    Args:
        *tensors: CPU tensors with the same first dimension (made contiguous once, here).
        pin_memory: as in :func:`fastcollate.collate`.

    Example:
        >>> import torch, fastcollate
        >>> ds = fastcollate.BatchedTensorDataset(torch.arange(10.0).view(5, 2), torch.arange(5))
        >>> x, y = ds[[4, 0]]
        >>> x, y
        (tensor([[8., 9.],
                [0., 1.]]), tensor([4, 0]))
        >>> ds[1]
        (tensor([2., 3.]), tensor(1))
    """

    def __init__(self, *tensors: torch.Tensor, pin_memory: bool | None = None) -> None:
        if not tensors:
            raise ValueError("BatchedTensorDataset needs at least one tensor")
        rows = None
        kept = []
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                raise CollateTypeError(f"tensor {i} must be a tensor with a first (sample) dimension, got {t!r:.60}")
            if not t.is_cpu or t.is_nested or t.layout is not torch.strided:
                raise CollateTypeError(f"tensor {i} must be a dense CPU tensor, got device {t.device}, {t.layout}")
            if rows is None:
                rows = t.shape[0]
            elif t.shape[0] != rows:
                raise CollateShapeError(f"tensor {i} has {t.shape[0]} rows but tensor 0 has {rows}")
            kept.append(t.detach().contiguous().resolve_neg().resolve_conj())
        self.tensors: tuple[torch.Tensor, ...] = tuple(kept)
        self._rows = int(rows or 0)
        self._pin = pin_memory

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, index: int | collections.abc.Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if not isinstance(index, collections.abc.Sequence):
            i = operator.index(index)
            return tuple(t[i] for t in self.tensors)
        indices = list(index)
        threads = copy_threads()
        # in a worker, all outputs of the batch share one shared-memory segment
        out = _buffers.empty_many([((len(indices), *t.shape[1:]), t.dtype) for t in self.tensors], pin=self._pin)
        for t, batch in zip(self.tensors, out, strict=True):
            row_bytes = t.nbytes // self._rows if self._rows else 0
            _native.gather_into((batch.data_ptr(), batch.nbytes), (t.data_ptr(), t.nbytes), row_bytes, indices, threads)
        return tuple(out)


def batch_sampler(
    dataset: collections.abc.Sized,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> BatchSampler:
    """A sampler of index lists, for ``DataLoader(dataset, batch_size=None, sampler=...)``.

    Example:
        >>> import torch, fastcollate
        >>> list(fastcollate.batch_sampler(range(5), 2))
        [[0, 1], [2, 3], [4]]
    """
    inner = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return BatchSampler(inner, batch_size, drop_last)
