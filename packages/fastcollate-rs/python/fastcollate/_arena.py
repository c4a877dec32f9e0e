"""The slot arena behind ``slot_loader``: slot files in /dev/shm owned by the main process, a worker's view of
them, and the small message a worker sends for a batch in a slot (see ``_slots``)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import secrets
import warnings
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch.utils.dlpack import from_dlpack

from fastcollate import _buffers, _native
from fastcollate._config import in_worker

__all__ = ["Arena", "Lease", "SlotBatch", "WorkerSlots", "estimate", "shm_dir", "slot_of", "sweep", "warn_once"]

STRIDE = 64  # bytes of the state file per slot: its u32 state, then the pid of the worker that claimed it
# FREE -> BUSY (a worker claimed it) -> HELD (the main process rebuilt the batch) -> FREE, or COPYING (with CUDA:
# freed, device copies may still read it) -> FREE. BUSY only lasts while a batch is on its way to the main process.
FREE, BUSY, COPYING, HELD = 0, 1, 2, 3
# Slots per worker beyond its batches in flight (prefetch_factor): the one the training step holds, the previous one
# still bound to the loop variable (or to the last loss's graph), and one whose device copy may still be completing.
EXTRA_SLOTS = 3
GROW_BYTES = 1 << 16  # slot files grow in multiples of this
NAME = "fastcollate-slots"
Spec = tuple[str, int, int]  # an arena's path prefix, its number of slots, the bytes to size a slot to first

logger = logging.getLogger("fastcollate")
_arenas: dict[str, Arena] = {}
_warned: set[str] = set()


def shm_dir() -> str:
    """Where slot files live: ``$FASTCOLLATE_SHM_DIR``, else /dev/shm."""
    return os.environ.get("FASTCOLLATE_SHM_DIR", "/dev/shm")


def warn_once(key: str, message: str) -> None:
    """A RuntimeWarning in the main process; in a worker a logged warning (on stderr unless logging is set up),
    which a warnings filter set to "error" cannot turn into a crash of the worker."""
    if key not in _warned:
        _warned.add(key)
        if in_worker():
            logger.warning("%s", message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_alive(pid: int) -> bool:
    """Whether ``pid`` is a running child of this process (a DataLoader worker still exiting); a pid reused by
    another process since does not count."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        return _alive(pid)
    return state not in ("Z", "X") and int(ppid) == os.getpid()


def sweep(directory: str | None = None) -> int:
    """Removes the slot files of processes that are gone (a main process killed with SIGKILL cannot remove its
    own); returns how many. Called whenever an arena is created."""
    directory = directory or shm_dir()
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        parts = name.split(".")
        if parts[0] != NAME or len(parts) < 3 or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


class Arena:
    """The main process's slots: a state file (per slot a u32 state and the claiming worker's pid) and one file
    per slot, all created empty here (workers open them, never create them, so nothing is left once ``close``
    unlinks).

    A loader keeps its arena across iterators (epochs without persistent workers, evaluation passes): the slots keep
    their size, and their pages stay allocated and mapped in the main process. Each iterator holds a
    :class:`Lease`; the arena closes once it is released (the loader is freed or ``release_slots()``) and no lease
    is left.
    """

    def __init__(self, slots: int, *, pin: bool, hint: int = 0) -> None:
        directory = shm_dir()
        self.hint = hint  # the bytes a batch takes (largest seen): workers size new slots from it
        self.pin = pin
        self.users = 0  # live leases (iterators using the arena)
        self.released = False
        self.closed = False
        sweep(directory)
        self.owner = os.getpid()
        self.slots = slots
        self.prefix = os.path.join(directory, f"{NAME}.{self.owner}.{secrets.token_hex(6)}")
        self._paths = [f"{self.prefix}.state"] + [f"{self.prefix}.{k}" for k in range(slots)]
        self._maps: list[Any] = [None] * slots
        self._pinned: list[Any] = []  # registered segments, kept mapped until they are unregistered
        self._events: dict[int, Any] = {}
        self._pin = pin and _buffers.cuda_available()
        self._release = COPYING if self._pin else FREE
        try:
            self.state = _native.Segment.open(self._paths[0], slots * STRIDE, True)
            for path in self._paths[1:]:
                _native.Segment.open(path, 0, True)
        except OSError:
            self.close()
            raise
        _arenas[self.prefix] = self

    @property
    def spec(self) -> tuple[str, int, int]:
        return self.prefix, self.slots, self.hint

    def lease(self) -> Lease:
        """A use of the arena by an iterator (slots orphaned by an earlier iterator's workers are freed first, and
        with CUDA, slots whose device copies were queued in the previous epoch are given their event)."""
        if self.users == 0:
            self.reclaim_orphans()
        if self._pin:
            self._reclaim()
        self.users += 1
        return Lease(self)

    def release(self) -> None:
        """Close once no iterator uses the arena (now, if none does)."""
        self.released = True
        if self.users == 0:
            self.close()

    def _end_lease(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.reclaim_orphans()
            if self.released:
                self.close()

    def reclaim_orphans(self) -> int:
        """Frees the slots left BUSY by workers that are gone (a batch prefetched but never received: an epoch cut
        short, a worker killed); how many. Only called while no iterator uses the arena."""
        if self.closed:
            return 0
        freed = 0
        for k in range(self.slots):
            at = k * STRIDE
            if self.state.load(at) == BUSY and not _worker_alive(self.state.load(at + 4)):
                freed += self.state.swap_if(at, BUSY, FREE)
        return freed

    def batch(self, k: int, nbytes: int) -> torch.Tensor:
        """The first ``nbytes`` of slot ``k`` as a uint8 tensor; freeing it (and every view of it) frees the slot."""
        if self._pin:
            self._reclaim()
        self.hint = max(self.hint, nbytes)
        self.state.store(k * STRIDE, HELD)
        seg = self._maps[k]
        if seg is None or seg.nbytes < nbytes:
            seg = self._maps[k] = _native.Segment.open(self._paths[k + 1], nbytes, False)
            if self._pin and seg.nbytes:
                self._register(seg)
        return from_dlpack(seg.dlpack(nbytes, (self.state, k * STRIDE, self._release)))

    def _register(self, seg: Any) -> None:
        """Registers a slot's mapping with CUDA as page-locked memory: ``is_pinned()`` is then true for its views
        and ``pin_memory()`` returns them as they are. Where CUDA refuses (e.g. a locked-memory limit), the pin
        thread copies the batch, as it does without slots."""
        err = int(torch.cuda.cudart().cudaHostRegister(seg.address, seg.nbytes, 0))  # type: ignore[no-untyped-call]
        if err == 0:
            self._pinned.append(seg)
        else:
            warn_once(
                "register", f"fastcollate: CUDA cannot pin a {seg.nbytes}-byte slot (error {err}); pin_memory copies"
            )

    def _reclaim(self) -> None:
        """COPYING slots (their tensors freed) get an event on the current stream, recorded after every copy that
        could read them was queued; a slot whose event has completed is free."""
        for k in range(self.slots):
            if self.state.load(k * STRIDE) != COPYING:
                continue
            event = self._events.get(k)
            if event is None:
                event = self._events[k] = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
            elif event.query():
                del self._events[k]
                self.state.store(k * STRIDE, FREE)

    def close(self) -> None:
        """Unlinks every file (mappings stay until the last batch using them is freed)."""
        if os.getpid() != self.owner or self.closed:
            return
        self.closed = True
        _arenas.pop(self.prefix, None)
        self._maps = [None] * self.slots  # the mappings now live only as long as the batches using them
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for seg in self._pinned:
            torch.cuda.cudart().cudaHostUnregister(seg.address)  # type: ignore[no-untyped-call]
        self._pinned.clear()


class Lease:
    """An iterator's use of an arena; ``end`` (idempotent) when its workers are shut down or it is freed."""

    __slots__ = ("arena",)

    def __init__(self, arena: Arena) -> None:
        self.arena: Arena | None = arena

    def end(self) -> None:
        arena, self.arena = self.arena, None
        if arena is not None and os.getpid() == arena.owner:
            arena._end_lease()


class WorkerSlots:
    """A worker's view of the arena: claims a free slot, grows it to the largest batch seen, collates into it."""

    def __init__(self, spec: Spec) -> None:
        self.prefix, self.slots, self.want = spec
        self.state = _native.Segment.open(f"{self.prefix}.state", 0, False)
        self.maps: list[tuple[Any, torch.Tensor] | None] = [None] * self.slots
        self.disabled = False
        self.pid = os.getpid()
        self.order = claim_order(self.slots)

    def claim(self) -> int | None:
        """The first free slot in this worker's order (its own slots, lowest first, then the others): a worker
        keeps reusing the few slots it has mapped; mapping another one costs ~1 us per 4 KiB page on a VM."""
        for k in self.order:
            if self.state.swap_if(k * STRIDE, FREE, BUSY):
                self.state.store(k * STRIDE + 4, self.pid)
                return k
        return None

    def base(self, k: int) -> torch.Tensor:
        """Slot ``k``, grown to at least ``want`` bytes, mapped with its page tables filled in one call (a slot kept
        from an earlier epoch has its pages already; a fresh one gets them here): no page fault per 4 KiB while the
        batch is written."""
        mapped = self.maps[k]
        if mapped is None or mapped[0].nbytes < self.want:
            size = -(-self.want // GROW_BYTES) * GROW_BYTES
            seg = _native.Segment.open(f"{self.prefix}.{k}", size, False)
            if seg.nbytes:
                _native.prefault((seg.address, seg.nbytes))
            mapped = self.maps[k] = (seg, from_dlpack(seg.dlpack(seg.nbytes)))
        return mapped[1]

    def collate(self, inner: Callable[[Any], Any], batch: Any) -> Any:
        if self.want == 0:  # the arena's first batch: sized from its samples, not by a stock-path batch
            self.want = estimate(batch)
        k = self.claim()
        if k is None:
            warn_once(
                "full",
                "fastcollate: every shared slot holds a batch that is still referenced (kept in a list?); such "
                "batches take the usual DataLoader path, which is slower. Keep fewer batches, or .clone() what you "
                "keep (this warning is shown once per worker)",
            )
            return inner(batch)
        try:
            base = self.base(k)
        except OSError as err:
            self.state.store(k * STRIDE, FREE)
            self.disabled = True
            warn_once("space", _no_room(err, self.want))
            return inner(batch)
        alloc = _buffers.SlotAlloc(base)
        try:
            with _buffers.slot_allocation(alloc):
                out = inner(batch)
        except BaseException:
            self.state.store(k * STRIDE, FREE)
            raise
        self.want = max(self.want, alloc.offset + alloc.overflow)
        if alloc.offset == 0:
            self.state.store(k * STRIDE, FREE)
            return out
        return SlotBatch(self.prefix, k, alloc.offset, base.data_ptr(), out)


def claim_order(slots: int) -> list[int]:
    """The order in which this DataLoader worker tries the slots: its own share (``slots // num_workers`` of them,
    at ``id x share``) first, then the rest."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is None or info.num_workers <= 0:
        return list(range(slots))
    share = slots // info.num_workers
    own = list(range(info.id * share, (info.id + 1) * share)) if share else []
    return own + [k for k in range(slots) if k not in own]


def _leaf_bytes(value: Any, n: int) -> int:
    """Bytes that ``n`` samples shaped like ``value`` take once collated (0 where that is not known)."""
    if isinstance(value, torch.Tensor):
        return -(-value.nbytes * n // 64) * 64
    if isinstance(value, (bool, int, float)):
        return -(-8 * n // 64) * 64
    if isinstance(value, (str, bytes)):
        return 0
    if isinstance(value, dict):
        return sum(_leaf_bytes(v, n) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_leaf_bytes(v, n) for v in value)
    nbytes = getattr(value, "nbytes", None)  # a numpy array or scalar (numpy is not imported for this)
    return -(-nbytes * n // 64) * 64 if isinstance(nbytes, int) and hasattr(value, "__array_interface__") else 0


def estimate(batch: Any) -> int:
    """The bytes a batch of ``batch`` (a list of samples) takes once collated, from its first sample: what a new
    arena's slots are sized to. A batch that turns out larger (e.g. padded sequences) grows them."""
    if not isinstance(batch, (list, tuple)) or not batch:
        return 0
    return _leaf_bytes(batch[0], len(batch))


def _no_room(err: OSError, want: int) -> str:
    directory = shm_dir()
    try:
        st = os.statvfs(directory)
        free = f"{st.f_bavail * st.f_frsize >> 20} MiB free of {st.f_blocks * st.f_frsize >> 20} MiB"
    except OSError:
        free = "its free space unknown"
    return (
        f"fastcollate: no room in {directory} ({free}) for a {want >> 20} MiB batch slot ({err}); batches take the "
        "usual DataLoader path. Give the container more shared memory (docker run --shm-size=2g), or set "
        "FASTCOLLATE_SHM_DIR to a larger tmpfs"
    )


class SlotBatch:
    """A collated batch in slot ``slot``, as a worker sends it: pickles to the slot's name and the batch's layout."""

    __slots__ = ("base", "nbytes", "out", "prefix", "slot")

    def __init__(self, prefix: str, slot: int, nbytes: int, base: int, out: Any) -> None:
        self.prefix, self.slot, self.nbytes, self.base, self.out = prefix, slot, nbytes, base, out

    def __reduce__(self) -> tuple[Any, ...]:
        buf = io.BytesIO()
        _SlotPickler(buf, self.base).dump(self.out)
        return _unpack, (self.prefix, self.slot, self.nbytes, buf.getvalue())


class _SlotPickler(ForkingPickler):
    """Pickles slot tensors as (offset, shape, stride, dtype); anything else as the DataLoader would."""

    def __init__(self, file: io.BytesIO, base: int) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.base = base

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is torch.Tensor and obj.untyped_storage().data_ptr() == self.base:
            return obj.data_ptr() - self.base, tuple(obj.shape), obj.stride(), obj.dtype
        return None


class _SlotUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, base: torch.Tensor) -> None:
        super().__init__(file)
        self.base = base

    def persistent_load(self, pid: Any) -> torch.Tensor:
        offset, shape, stride, dtype = pid
        span = 0 if 0 in shape else sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) + 1
        return self.base[offset : offset + span * dtype.itemsize].view(dtype).as_strided(shape, stride)


def _unpack(prefix: str, slot: int, nbytes: int, blob: bytes) -> Any:
    arena = _arenas.get(prefix)
    if arena is None:
        raise RuntimeError(
            f"a fastcollate batch of slot arena {prefix} was unpickled in process {os.getpid()}, which does not own "
            "that arena (or after its loader was shut down)"
        )
    return _SlotUnpickler(io.BytesIO(blob), arena.batch(slot, nbytes)).load()


def slot_of(t: torch.Tensor) -> int | None:
    """The slot of a live arena of this process whose memory holds ``t``, else None."""
    ptr = t.untyped_storage().data_ptr()
    for arena in list(_arenas.values()):
        for k, seg in enumerate(arena._maps):
            if seg is not None and seg.address <= ptr < seg.address + seg.nbytes:
                return k
    return None
