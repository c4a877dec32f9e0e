"""Where batch outputs live: memory that is owned and reused instead of a fresh allocation per batch.

A fresh multi-megabyte buffer costs a page fault per 4 KiB on first touch, which caps a copy into it at about
1-2 GB/s, while a copy into warm memory runs several times faster. So:

- in the main process without CUDA, outputs come from a small ring of buffers per (shape, dtype); a buffer is
  handed out again only when nothing references the previous batch any more (its storage's use count says so);
- with CUDA, outputs are pinned, from PyTorch's caching host allocator, which keeps the blocks warm and reuses one
  only after the asynchronous host-to-device copies reading it have completed; ``pin_memory`` then costs nothing;
- inside DataLoader workers, outputs are in shared memory (as ``default_collate`` does), so the batch crosses to
  the main process without another copy.
"""

from __future__ import annotations

import collections
import threading

import torch

from fastcollate._config import in_worker

__all__ = ["BufferRing", "release_buffers"]

_cuda_available: bool | None = None

# Outputs smaller than this come from torch.empty: malloc reuses small blocks, so they are warm anyway.
RING_MIN_BYTES = 1 << 20


def cuda_available() -> bool:
    global _cuda_available
    if _cuda_available is None:
        _cuda_available = torch.cuda.is_available()
    return _cuda_available


def _storage_use_count(tensor: torch.Tensor) -> int:
    # The temporary storage object returned by untyped_storage() holds one reference itself.
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) - 1


class BufferRing:
    """A few reusable output buffers per (shape, dtype), least recently used shapes dropped first.

    Args:
        per_shape: buffers kept per (shape, dtype); when all are in use, a fresh tensor is returned (not kept).
        max_shapes: distinct (shape, dtype) keys kept (e.g. full batches plus the last, smaller one).

    Example:
        >>> ring = BufferRing(per_shape=2)
        >>> a = ring.take((4, 3), torch.float32)
        >>> a.data_ptr() == ring.take((4, 3), torch.float32).data_ptr()  # a is still referenced
        False
        >>> ptr = a.data_ptr()
        >>> del a
        >>> ring.take((4, 3), torch.float32).data_ptr() == ptr  # free again: reused
        True
    """

    def __init__(self, per_shape: int = 3, max_shapes: int = 4) -> None:
        if per_shape < 1 or max_shapes < 1:
            raise ValueError(f"per_shape and max_shapes must be >= 1, got {per_shape} and {max_shapes}")
        self._per_shape = per_shape
        self._max_shapes = max_shapes
        self._buffers: collections.OrderedDict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = (
            collections.OrderedDict()
        )

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Returns a tensor of ``shape`` and ``dtype`` whose memory nobody else references (contents undefined)."""
        key = (tuple(shape), dtype)
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = self._buffers[key] = []
            while len(self._buffers) > self._max_shapes:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(key)
        for buffer in buffers:
            if _storage_use_count(buffer) == 1:
                return buffer.view(key[0])
        fresh = torch.empty(key[0], dtype=dtype)
        if len(buffers) < self._per_shape:
            buffers.append(fresh)
            return fresh.view(key[0])
        return fresh

    def clear(self) -> None:
        """Drops every kept buffer (memory is freed once the batches handed out are gone)."""
        self._buffers.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring."""
        return sum(b.nbytes for buffers in self._buffers.values() for b in buffers)


_local = threading.local()


def _ring() -> BufferRing:
    ring = getattr(_local, "ring", None)
    if ring is None:
        ring = _local.ring = BufferRing()
    return ring


def release_buffers() -> None:
    """Frees the output buffers this thread keeps for reuse (e.g. after training, before evaluation).

    Example:
        >>> import fastcollate
        >>> fastcollate.release_buffers()
    """
    _ring().clear()


def empty(shape: tuple[int, ...], dtype: torch.dtype, *, pin: bool | None) -> torch.Tensor:
    """An output tensor for a batch: shared memory in a worker, pinned with CUDA, else from the ring."""
    if in_worker():
        numel = 1
        for size in shape:
            numel *= size
        template = torch.empty((0,), dtype=dtype)
        storage = template._typed_storage()._new_shared(numel, device=template.device)
        return template.new(storage).resize_(*shape)
    if pin if pin is not None else cuda_available():
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    numel = 1
    for size in shape:
        numel *= size
    if numel * dtype.itemsize < RING_MIN_BYTES:  # malloc keeps small blocks warm by itself
        return torch.empty(shape, dtype=dtype)
    return _ring().take(shape, dtype)
