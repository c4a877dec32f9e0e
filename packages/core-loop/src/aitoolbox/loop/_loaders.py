"""The loaders the loop actually iterates: the user's DataLoaders, derived (never mutated) where the loop adds
something, e.g. fastcollate's collation.

A derived loader is a shallow copy of the user's, so every option (workers, pin_memory, persistent_workers,
prefetch_factor, worker_init_fn, generator, timeout, multiprocessing context...) is kept as it is.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Iterable
from typing import Any

from aitoolbox.loop.errors import LoopConfigError

__all__ = [
    "derive_loader",
    "fast_collate_available",
    "lenient_fast_collate",
    "resolve_fast_collate",
    "with_fast_collate",
]

logger = logging.getLogger(__name__)


def derive_loader(loader: Any, **changes: Any) -> Any:
    """A shallow copy of a DataLoader with some attributes replaced (its own iterator; the original untouched)."""
    clone = copy.copy(loader)
    object.__setattr__(clone, "_iterator", None)  # persistent workers belong to the original
    for name, value in changes.items():
        object.__setattr__(clone, name, value)
    return clone


def fast_collate_available() -> bool:
    """Whether the optional ``fastcollate`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("fastcollate") is not None


def resolve_fast_collate(fast_collate: object) -> bool:
    """The TrainLoop ``fast_collate`` option as a bool: ``None`` means "when installed"."""
    if fast_collate is None:
        return fast_collate_available()
    if not isinstance(fast_collate, bool):
        raise LoopConfigError(f"fast_collate must be True, False or None, got {fast_collate!r}")
    if fast_collate and not fast_collate_available():
        raise LoopConfigError(
            "fast_collate=True needs the fastcollate package: pip install fastcollate (or aitoolbox[fast]); "
            "or pass fast_collate=None to use it only when installed"
        )
    return fast_collate


def lenient_fast_collate(batch: Any) -> Any:
    """``fastcollate.collate(batch)``; a batch it declines (a later sample of another dtype, which
    ``default_collate`` promotes...) is collated by ``default_collate``, so the loop accepts whatever plain PyTorch
    does and raises what plain PyTorch raises. A module-level function: picklable for spawned workers."""
    import fastcollate

    try:
        return fastcollate.collate(batch)
    except fastcollate.CollateError as err:
        from torch.utils.data import default_collate

        logger.debug("fastcollate declined a batch (%s); default_collate collates it", err)
        return default_collate(batch)


def with_fast_collate(loader: Iterable[Any]) -> Iterable[Any]:
    """``loader`` collating with :func:`lenient_fast_collate` when it uses torch's ``default_collate``; else
    itself."""
    from torch.utils.data import DataLoader, default_collate

    if not isinstance(loader, DataLoader) or loader.collate_fn is not default_collate:
        if isinstance(loader, DataLoader):
            logger.debug("keeping the custom collate_fn %r of a DataLoader", loader.collate_fn)
        return loader
    return derive_loader(loader, collate_fn=lenient_fast_collate)
