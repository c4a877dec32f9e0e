"""Worker-fed batches without a shared-memory segment per batch: ``slot_loader``.

A DataLoader worker normally puts each batch into fresh shared-memory segments, and the main process receives
their file descriptors and maps them: about 0.7 ms per tensor on 2 cores, plus a page fault per 4 KiB of every new
segment. Here the main process owns an arena of slots (files in /dev/shm, one per batch that can be in flight or
held, grown to the batches' size); a worker claims a free slot, collates into it, and sends a few hundred bytes
that name the slot and the batch's layout; unpickling them in the main process rebuilds the batch as views of its
own mapping of the slot. A slot is free again once every tensor of its batch is freed (with CUDA and
``pin_memory``: once the device copies queued before that have completed). A batch that finds no free slot, or
does not fit yet, takes the usual path: nothing waits for a slot.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, default_collate
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from fastcollate._arena import EXTRA_SLOTS, Arena, Lease, Spec, WorkerSlots, warn_once
from fastcollate._config import in_worker
from fastcollate.errors import CollateError

__all__ = ["SlotCollate", "SlotDataLoader", "lenient_collate", "slot_loader"]

_worker: tuple[Spec, WorkerSlots | None] | None = None


def _worker_slots(spec: Spec) -> WorkerSlots | None:
    global _worker
    if _worker is None or _worker[0] != spec:
        try:
            slots: WorkerSlots | None = WorkerSlots(spec)
        except OSError as err:  # the arena is gone (the loader was shut down)
            warn_once("gone", f"fastcollate: the slot arena cannot be opened ({err}); batches take the usual path")
            slots = None
        _worker = (spec, slots)
    slots = _worker[1]
    return None if slots is None or slots.disabled else slots


class SlotCollate:
    """The collate_fn a slot loader's workers run: ``inner`` collating into a claimed slot (in the main process,
    ``inner`` alone)."""

    def __init__(self, inner: Callable[[Any], Any], spec: Spec) -> None:
        self.inner = inner
        self.spec = spec

    def __call__(self, batch: Any) -> Any:
        slots = _worker_slots(self.spec) if in_worker() else None
        return self.inner(batch) if slots is None else slots.collate(self.inner, batch)


def lenient_collate(batch: Any) -> Any:
    """``fastcollate.collate``; a batch it declines (e.g. a later sample of another dtype) goes to
    ``default_collate``, whose promotion rules then apply."""
    from fastcollate._collate import collate

    try:
        return collate(batch)
    except CollateError:
        return default_collate(batch)


class SlotDataLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader whose multi-process iterators share one arena of shared slots (see ``slot_loader``), kept from
    one iterator to the next until the loader is freed or :meth:`release_slots` is called."""

    _slot_arena: Arena | None = None
    _slot_finalizer: weakref.finalize[Any, Any]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_slot_arena"] = None  # this process's files and mappings
        state.pop("_slot_finalizer", None)
        return state

    def release_slots(self) -> None:
        """Frees the slot arena (its files in /dev/shm and the memory behind them) once no iterator uses it; the
        next iterator makes a new one, sized as this one was. Called when the loader is freed and at exit."""
        arena = self._slot_arena
        if arena is not None:
            arena.release()

    def _arena(self, slots: int) -> Arena | None:
        """The loader's arena: the one kept from earlier iterators when it still fits, else a new one."""
        pin = self.pin_memory
        arena = self._slot_arena
        if arena is not None and not arena.released and arena.slots >= slots and arena.pin == pin:
            return arena
        hint = 0
        if arena is not None:
            hint = arena.hint
            arena.release()
            self._slot_finalizer.detach()
        try:
            arena = Arena(slots, pin=pin, hint=hint)
        except OSError as err:
            object.__setattr__(self, "_slot_arena", None)
            warn_once("arena", f"fastcollate: cannot create the slot arena ({err}); batches take the usual path")
            return None
        object.__setattr__(self, "_slot_arena", arena)
        object.__setattr__(self, "_slot_finalizer", weakref.finalize(self, arena.release))  # loader freed, or exit
        return arena

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        arena = self._arena(self.num_workers * ((self.prefetch_factor or 2) + EXTRA_SLOTS))
        if arena is None:
            return super()._get_iterator()
        lease = arena.lease()
        plain = self.collate_fn
        object.__setattr__(self, "collate_fn", SlotCollate(plain, arena.spec))
        try:
            self.check_worker_number_rationality()
            iterator = _SlotIterator(self)
        except BaseException:
            lease.end()
            raise
        finally:
            object.__setattr__(self, "collate_fn", plain)
        iterator._slot_lease = lease
        weakref.finalize(iterator, lease.end)  # an iterator still alive at exit
        return iterator


class _SlotIterator(_MultiProcessingDataLoaderIter):
    """torch's multi-process iterator, ending its lease on the arena once its workers are shut down (at the end of
    an epoch without persistent workers, on an error, or when it is freed, whether by reference counting or by the
    cyclic garbage collector)."""

    _slot_lease: Lease | None = None

    def _shutdown_workers(self) -> None:
        try:
            super()._shutdown_workers()
        finally:
            if self._slot_lease is not None:
                self._slot_lease.end()


def slot_loader(loader: DataLoader, *, collate_fn: Callable[[Any], Any] | None = None) -> SlotDataLoader:  # type: ignore[type-arg]
    """A copy of ``loader`` whose workers collate each batch straight into a shared slot the main process owns.

    The batches are equal to what ``loader`` gives (same structure, dtypes, values; ordinary tensors), and every
    option of ``loader`` is kept (workers, ``prefetch_factor``, ``persistent_workers``, ``worker_init_fn``,
    ``timeout``, start method, ``IterableDataset`` sharding...). The main process then spends microseconds per
    batch instead of mapping a segment per tensor. With ``num_workers=0`` nothing changes (the main-process
    collation already reuses its memory).

    Args:
        loader: a ``torch.utils.data.DataLoader`` (not a subclass: its iterators may work differently).
        collate_fn: collates in the workers; by default ``fastcollate.collate`` where ``loader`` uses
            ``default_collate`` (a batch it declines goes to ``default_collate``), else ``loader.collate_fn``. Only
            fastcollate's collations (``collate``, ``pad_collate``) write into slots; another collate_fn works, the
            usual way.

    Returns:
        The new loader; ``loader`` is left as it is.

    Raises:
        TypeError: ``loader`` is not a DataLoader, or is a subclass of it; ``collate_fn`` is not callable.

    Example:
        >>> import torch, fastcollate
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.arange(8.0).reshape(4, 2), torch.arange(4))
        >>> loader = fastcollate.slot_loader(DataLoader(data, batch_size=2, num_workers=1))
        >>> [y.tolist() for _, y in loader]
        [[0, 1], [2, 3]]
    """
    if not isinstance(loader, DataLoader) or type(loader) not in (DataLoader, SlotDataLoader):
        raise TypeError(
            f"slot_loader takes a torch.utils.data.DataLoader, got {type(loader).__qualname__}; a DataLoader "
            "subclass keeps its own iterators: pass collate_fn=fastcollate.collate to it instead"
        )
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn must be a callable taking a list of samples, got {collate_fn!r}")
    if collate_fn is None:
        collate_fn = lenient_collate if loader.collate_fn is default_collate else loader.collate_fn
    clone = copy.copy(loader)
    object.__setattr__(clone, "__class__", SlotDataLoader)
    object.__setattr__(clone, "_iterator", None)  # persistent workers belong to the original
    object.__setattr__(clone, "collate_fn", collate_fn)
    object.__setattr__(clone, "_slot_arena", None)
    return clone  # type: ignore[return-value]
