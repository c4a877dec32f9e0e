"""Device selection and batch transfer: ``non_blocking`` copies, and a CUDA side-stream prefetcher."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from aitoolbox.loop._batch import first_array, leaves, map_tensors
from aitoolbox.loop.errors import LoopConfigError

__all__ = ["CudaPrefetcher", "move_to_device", "resolve_device"]


def resolve_device(device: str | torch.device | None, cuda_device_idx: int | None = None) -> torch.device:
    """Return the device to train on: ``device`` if given, else ``cuda`` when available, else ``cpu``."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", 0 if cuda_device_idx is None else cuda_device_idx)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise LoopConfigError(f"device must be e.g. 'cpu', 'cuda' or 'cuda:1', got {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LoopConfigError(f"device={device!r} but CUDA is not available here; use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device() if cuda_device_idx is None else cuda_device_idx)
    return dev


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move every tensor inside ``batch`` (tuples, lists, namedtuples, dicts, dataclasses) to ``device``.

    Tensors already on ``device`` are returned as they are; other leaves (strings, numbers) are left alone.

    Example:
        >>> import torch
        >>> out = move_to_device({"x": torch.ones(2), "ids": [1, 2]}, torch.device("cpu"))
        >>> out["x"].device.type, out["ids"]
        ('cpu', [1, 2])
    """
    return map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def _record_stream(batch: Any, stream: torch.cuda.Stream) -> None:
    for leaf in leaves(batch):
        if isinstance(leaf, torch.Tensor) and leaf.is_cuda:
            leaf.record_stream(stream)


def is_pinned(batch: Any) -> bool:
    """True when the first tensor found in ``batch`` is in pinned (page-locked) host memory."""
    first = first_array(batch)
    return isinstance(first, torch.Tensor) and first.device.type == "cpu" and first.is_pinned()


class CudaPrefetcher:
    """Iterate a loader while the *next* batch is copied to the GPU on a side stream.

    The compute stream waits for the copy (one reused CUDA event) only when it takes the batch, and each tensor is
    marked with ``record_stream`` so the caching allocator does not reuse its memory while the step still reads it.
    Copies overlap compute only from pinned memory (``DataLoader(pin_memory=True)``); with ``only_pinned=True`` (the
    default) unpinned batches are moved on the current stream instead, which costs less on the host.
    """

    def __init__(self, loader: Iterable[Any], device: torch.device, *, only_pinned: bool = True) -> None:
        self.loader = loader
        self.device = device
        self.only_pinned = only_pinned
        self.stream = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        try:
            first = next(it)
        except StopIteration:
            return
        device = self.device
        if self.only_pinned and not is_pinned(first):
            yield move_to_device(first, device)
            for batch in it:
                yield move_to_device(batch, device)
            return
        side = self.stream
        side_ctx = torch.cuda.stream(side)  # reused: entering it per batch costs less than building it
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        current = torch.cuda.current_stream(device)
        with side_ctx:
            nxt = move_to_device(first, device)
            ready.record(side)
        while True:
            current.wait_event(ready)
            batch = nxt
            _record_stream(batch, current)
            try:
                raw = next(it)
            except StopIteration:
                yield batch
                return
            with side_ctx:
                nxt = move_to_device(raw, device)
                ready.record(side)
            yield batch
