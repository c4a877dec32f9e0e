"""Where batch outputs live: memory that is owned and reused instead of a fresh allocation per batch.

A fresh multi-megabyte buffer costs a page fault per 4 KiB on first touch, which caps a copy into it at about
1-2 GB/s, while a copy into warm memory runs several times faster. So:

- in the main process without CUDA, outputs come from a small ring of buffers per (shape, dtype); a buffer is
  handed out again only when nothing references the previous batch any more (its storage's use count says so);
- with CUDA, outputs are pinned, from PyTorch's caching host allocator, which keeps the blocks warm and reuses one
  only after the asynchronous host-to-device copies reading it have completed; ``pin_memory`` then costs nothing;
- inside DataLoader workers, outputs are in shared memory (as ``default_collate`` does), so the batch crosses to
  the main process without another copy; and all of a batch's small outputs share one segment (``pack_shared``):
  handing a batch over costs about 0.7 ms per separate storage on a 2-core machine (a segment created, its file
  descriptor sent through the worker's resource sharer, then mapped by the main process) but ~0.1 ms per extra
  view of the same segment.
"""

from __future__ import annotations

import collections
import collections.abc
import threading
from typing import Any

import torch

from fastcollate import _native
from fastcollate._config import in_worker

__all__ = [
    "BufferRing",
    "SlotAlloc",
    "empty",
    "empty_many",
    "get_worker_packing",
    "pack_shared",
    "release_buffers",
    "set_worker_packing",
    "slot_allocation",
]

_cuda_available: bool | None = None

# Outputs smaller than this come from torch.empty: malloc reuses small blocks, so they are warm anyway.
RING_MIN_BYTES = 1 << 20
# In a worker, outputs up to this size (set_worker_packing) are made in ordinary memory and then packed into one
# shared segment per batch (pack_shared); larger ones get a segment of their own, written in place.
DEFAULT_PACK_MAX_BYTES = 64 << 10
_pack_max_bytes = DEFAULT_PACK_MAX_BYTES
# Fresh shared segments at least this large are faulted in at once before they are written.
PREFAULT_MIN_BYTES = 1 << 20
# Offsets of the tensors packed into one segment are multiples of this (a cache line; any dtype's alignment).
_ALIGN = 64


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


def _shared_segment(nbytes: int) -> torch.Tensor:
    """A uint8 tensor over a fresh shared-memory segment of ``nbytes`` (what default_collate uses in workers).

    A large one is faulted in at once (one madvise call) before it is written: a copy into fresh memory otherwise
    takes a page fault per 4 KiB, and goes a third slower.
    """
    template = torch.empty((0,), dtype=torch.uint8)
    storage = template._typed_storage()._new_shared(nbytes, device=template.device)  # type: ignore[no-untyped-call]
    segment = template.new(storage)
    if nbytes >= PREFAULT_MIN_BYTES:
        _native.prefault((segment.data_ptr(), nbytes))
    return segment


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    numel = 1
    for size in shape:
        numel *= size
    return numel * dtype.itemsize


def _carve(segment: torch.Tensor, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return segment[offset : offset + _nbytes(shape, dtype)].view(dtype).view(shape)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


class SlotAlloc:
    """A worker's batch outputs carved in order from the memory of a shared slot (``fastcollate._slots``);
    ``overflow`` counts the bytes that did not fit (those outputs take the usual worker path)."""

    __slots__ = ("base", "offset", "overflow")

    def __init__(self, base: torch.Tensor) -> None:
        self.base = base  # uint8, the whole slot
        self.offset = 0
        self.overflow = 0

    def carve(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        nbytes = _nbytes(shape, dtype)
        if self.offset + nbytes > self.base.numel():
            self.overflow += _aligned(nbytes)
            return None
        out = _carve(self.base, self.offset, tuple(shape), dtype)
        self.offset += _aligned(nbytes)
        return out

    def holds(self, t: torch.Tensor) -> bool:
        return self.base.numel() > 0 and t.untyped_storage().data_ptr() == self.base.data_ptr()


class slot_allocation:
    """Within the block, this thread's worker outputs come from ``alloc`` first."""

    def __init__(self, alloc: SlotAlloc) -> None:
        self.alloc = alloc

    def __enter__(self) -> SlotAlloc:
        _local.slot = self.alloc
        return self.alloc

    def __exit__(self, *exc: object) -> None:
        _local.slot = None


def _slot() -> SlotAlloc | None:
    return getattr(_local, "slot", None)


def _offsets(sizes: list[int]) -> tuple[list[int], int]:
    """Aligned offsets for blocks of ``sizes`` bytes laid end to end, and the total."""
    offsets, total = [], 0
    for nbytes in sizes:
        offsets.append(total)
        total += _aligned(nbytes)
    return offsets, total


def empty(shape: tuple[int, ...], dtype: torch.dtype, *, pin: bool | None) -> torch.Tensor:
    """An output tensor for a batch: pinned with CUDA, else from the ring; in a worker, a large one in shared
    memory of its own and a small one in ordinary memory (packed with the others by ``pack_shared``)."""
    nbytes = _nbytes(shape, dtype)
    if in_worker():
        slot = _slot()
        if slot is not None:
            carved = slot.carve(tuple(shape), dtype)
            if carved is not None:
                return carved
        if nbytes <= _pack_max_bytes:
            return torch.empty(shape, dtype=dtype)
        return _carve(_shared_segment(nbytes), 0, tuple(shape), dtype)
    if pin if pin is not None else cuda_available():
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    if nbytes < RING_MIN_BYTES:  # malloc keeps small blocks warm by itself
        return torch.empty(shape, dtype=dtype)
    return _ring().take(shape, dtype)


def empty_many(specs: list[tuple[tuple[int, ...], torch.dtype]], *, pin: bool | None) -> list[torch.Tensor]:
    """Output tensors of the given (shape, dtype), as ``empty`` makes them; in a worker, the small ones (see
    ``set_worker_packing``) are views of one shared segment and each large one has a segment of its own."""
    if not in_worker() or _slot() is not None:
        return [empty(shape, dtype, pin=pin) for shape, dtype in specs]
    sizes = [_nbytes(shape, dtype) for shape, dtype in specs]
    out: list[torch.Tensor | None] = [None] * len(specs)
    small = [i for i, nbytes in enumerate(sizes) if nbytes <= _pack_max_bytes]
    if len(small) >= 2:
        offsets, total = _offsets([sizes[i] for i in small])
        segment = _shared_segment(total)
        for i, offset in zip(small, offsets, strict=True):
            out[i] = _carve(segment, offset, tuple(specs[i][0]), specs[i][1])
    return [
        t if t is not None else _carve(_shared_segment(nbytes), 0, tuple(shape), dtype)
        for t, nbytes, (shape, dtype) in zip(out, sizes, specs, strict=True)
    ]


def set_worker_packing(max_bytes: int) -> None:
    """Sets the largest output that DataLoader workers pack into one shared-memory segment with the batch's other
    small outputs (default 64 KiB; 0 turns packing off).

    Handing a batch to the main process costs about 0.7 ms per separate storage on a 2-core machine and ~0.1 ms per
    extra view of the same one, so packing speeds up loaders of small items. But tensors that share a segment keep
    each other alive: with a limit above the size of your feature batches, keeping every batch's labels (for
    metrics, say) also keeps every batch's features, unless you ``.clone()`` what you keep. The default packs
    labels, weights, lengths and masks, not typical feature batches. Set it before the DataLoader starts its
    workers (they inherit it when forked; with the spawn start method, set it in ``worker_init_fn``).

    Args:
        max_bytes: a non-negative int.

    Raises:
        ValueError: for anything else.

    Example:
        >>> import fastcollate
        >>> fastcollate.set_worker_packing(1 << 20)  # feature rows up to 1 MiB too
        >>> fastcollate.get_worker_packing()
        1048576
        >>> fastcollate.set_worker_packing(64 << 10)
    """
    global _pack_max_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int (bytes), got {max_bytes!r}")
    _pack_max_bytes = max_bytes


def get_worker_packing() -> int:
    """The largest output (bytes) that DataLoader workers pack with the batch's other small outputs."""
    return _pack_max_bytes


def _copyable(t: Any) -> bool:
    return (
        type(t) is torch.Tensor
        and t.layout is torch.strided
        and t.is_cpu
        and not t.requires_grad
        and t.is_contiguous()
        and not t.is_neg()
        and not t.is_conj()
    )


def _packable(t: Any) -> bool:
    return _copyable(t) and t.nbytes <= _pack_max_bytes and not t.is_shared()


def pack_shared(values: list[Any]) -> list[Any]:
    """``values`` (a batch's leaf outputs) with its small tensors moved into one shared-memory segment.

    Tensors and the tensor fields of named tuples (``PaddedBatch``) count; when fewer than two qualify, ``values``
    is returned as it is (the DataLoader then shares the one, as it would anyway). While a slot is being filled
    (``slot_allocation``), every tensor not yet in it is moved into it instead, whatever its size, if it fits.
    """
    slot = _slot()
    if slot is not None:
        return _move(values, _found(values, lambda t: _copyable(t) and not slot.holds(t)), slot.carve)
    found = _found(values, _packable)
    if len(found) < 2:
        return values
    offsets, total = _offsets([t.nbytes for _, _, t in found])
    segment = _shared_segment(total)
    places = iter(offsets)
    return _move(values, found, lambda shape, dtype: _carve(segment, next(places), shape, dtype))


Found = list[tuple[int, int, torch.Tensor]]  # (index in values, field index or -1, tensor)


def _found(values: list[Any], wanted: collections.abc.Callable[[Any], bool]) -> Found:
    found: Found = []
    for i, value in enumerate(values):
        if wanted(value):
            found.append((i, -1, value))
        elif isinstance(value, tuple) and hasattr(value, "_fields"):
            found.extend((i, j, field) for j, field in enumerate(value) if wanted(field))
    return found


def _move(
    values: list[Any],
    found: Found,
    place: collections.abc.Callable[[tuple[int, ...], torch.dtype], torch.Tensor | None],
) -> list[Any]:
    """``values`` with each ``found`` tensor copied to where ``place`` puts it (left where ``place`` returns
    None)."""
    out = list(values)
    fields: dict[int, list[Any]] = {}
    for i, j, t in found:
        view = place(tuple(t.shape), t.dtype)
        if view is None:
            continue
        if t.nbytes:
            _native.stack_into((view.data_ptr(), view.nbytes), [t.data_ptr()], t.nbytes, 1)
        if j < 0:
            out[i] = view
        else:
            fields.setdefault(i, list(values[i]))[j] = view
    for i, parts in fields.items():
        out[i] = type(values[i])(*parts)
    return out
