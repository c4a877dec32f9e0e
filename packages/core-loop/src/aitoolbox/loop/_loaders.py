"""The loaders the loop actually iterates: the user's DataLoaders, derived (never mutated) where the loop adds
something, e.g. fastcollate's collation.

A derived loader is a shallow copy of the user's, so every option (workers, pin_memory, persistent_workers,
prefetch_factor, worker_init_fn, generator, timeout, multiprocessing context...) is kept as it is.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aitoolbox.loop.elastic import elastic_sampler
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.preemption import IgnoreSignals

if TYPE_CHECKING:
    from aitoolbox.loop.runtime import Runtime

__all__ = [
    "RunLoaders",
    "derive_loader",
    "fast_collate_available",
    "lenient_fast_collate",
    "resolve_fast_collate",
    "with_fast_collate",
]

logger = logging.getLogger(__name__)


def derive_loader(loader: Any, **changes: Any) -> Iterable[Any]:
    """A shallow copy of a DataLoader with some attributes replaced (its own iterator; the original untouched)."""
    clone: Iterable[Any] = copy.copy(loader)
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
    itself. A plain DataLoader with workers also gets ``fastcollate.slot_loader``'s shared slots (fastcollate >=
    0.2): its workers collate straight into memory the main process owns."""
    from torch.utils.data import DataLoader, default_collate

    if not isinstance(loader, DataLoader) or loader.collate_fn is not default_collate:
        if isinstance(loader, DataLoader):
            logger.debug("keeping the custom collate_fn %r of a DataLoader", loader.collate_fn)
        return loader
    if loader.num_workers > 0 and type(loader) is DataLoader:
        import fastcollate

        slot_loader = getattr(fastcollate, "slot_loader", None)
        if slot_loader is not None:
            derived: Iterable[Any] = slot_loader(loader, collate_fn=lenient_fast_collate)
            return derived
    return derive_loader(loader, collate_fn=lenient_fast_collate)


def _shut_down(cache: dict[str, tuple[Any, Any, bool]]) -> None:
    """Shuts down the persistent workers of the loaders the loop derived, and releases their slots.

    Called when the loop is freed, through a weak reference: the cache (so the derived loaders and their iterators)
    stays reachable until then. Left to the cyclic collector with the loop, torch's iterator would find its index
    queues already finalized, its shutdown message never sent, and wait 5 s per worker before terminating it.
    """
    for original, derived, _ in cache.values():
        if derived is not original and getattr(derived, "_iterator", None) is not None:
            object.__setattr__(derived, "_iterator", None)  # freed now by reference counting: a clean shutdown
        release = getattr(derived, "release_slots", None)
        if release is not None:
            release()
    cache.clear()


class RunLoaders:
    """The loaders a fit iterates for the user's: derived once per user loader (again when it is replaced).

    Derivation shards (in distributed runs, through the runtime) and then switches to fast collation. Evaluation of
    the training set in a distributed run goes through its own copy, sharded for evaluation (strided, no padding).
    """

    def __init__(self, runtime: Runtime, fast_collate: bool, ignore_signals: tuple[int, ...] = ()) -> None:
        self.runtime = runtime
        self.fast_collate = fast_collate
        self.ignore_signals = ignore_signals  # the preemption signals: the main process handles them, not workers
        self.sampler_seed = 0
        self.accumulation = 1  # micro-batches per optimizer step: an ElasticSampler's share depends on it
        self._cache: dict[str, tuple[Any, Any, bool]] = {}
        self._using = 0  # nested uses (a fit, an evaluation outside a fit)
        weakref.finalize(self, _shut_down, self._cache)  # the loop freed (often by the cyclic collector), or exit

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """A fit or an evaluation outside one: when the outermost ends, the derived loaders' shared-memory slots
        (fastcollate) are released. Within it they are kept from epoch to epoch and across the switch between
        training and evaluation, sized and mapped, whether the workers are persistent or not."""
        self._using += 1
        try:
            yield
        finally:
            self._using -= 1
            if self._using == 0:
                self.release()

    def release(self) -> None:
        """Frees the shared-memory slots of every derived loader now (a later epoch makes them again)."""
        for _, derived, _ in self._cache.values():
            release = getattr(derived, "release_slots", None)
            if release is not None:
                release()

    def reset(self, runtime: Runtime | None = None, sampler_seed: int | None = None) -> None:
        """Forget every derived loader (the runtime or the training shuffling changed)."""
        self.runtime = runtime or self.runtime
        self.sampler_seed = self.sampler_seed if sampler_seed is None else sampler_seed
        self.release()
        self._cache.clear()

    def set_accumulation(self, accumulation: int) -> None:
        """The fit's ``grad_accumulation`` (an elastic training loader is derived again when it changes)."""
        if accumulation != self.accumulation:
            self.accumulation = accumulation
            self._forget("train_loader")

    def _forget(self, key: str) -> None:
        cached = self._cache.pop(key, None)
        release = getattr(cached[1], "release_slots", None) if cached is not None else None
        if release is not None:
            release()

    def train(self, loader: Iterable[Any]) -> Iterable[Any]:
        return self._get("train_loader", loader)[0]

    def evaluation(self, name: str, loader: Iterable[Any]) -> tuple[Iterable[Any], bool]:
        """The loader to evaluate ``name`` on, and whether it is this process's share only."""
        key = f"{name}:eval" if name == "train_loader" and self.runtime.distributed else name
        return self._get(key, loader)

    def _get(self, key: str, loader: Iterable[Any]) -> tuple[Iterable[Any], bool]:
        cached = self._cache.get(key)
        if cached is not None and cached[0] is loader:
            return cached[1], cached[2]
        self._forget(key)  # a loader replaced by another
        derived, sharded = loader, False
        if key == "train_loader":
            elastic = elastic_sampler(loader)
            if elastic is not None:  # this rank's micro-batches of each global batch, whatever the world size
                rt = self.runtime
                derived = derive_loader(loader, batch_sampler=elastic.shard(rt.rank, rt.world_size, self.accumulation))
            else:
                derived = self.runtime.shard_train(loader, self.sampler_seed)
        else:
            share = self.runtime.shard_eval(loader)
            if share is None and self.runtime.distributed:
                logger.debug("%s cannot be sharded: every rank evaluates all of it", key)
            derived, sharded = (loader, False) if share is None else (share, True)
        if self.fast_collate:
            derived = with_fast_collate(derived)
        if self.ignore_signals and getattr(derived, "num_workers", 0) > 0:
            init = IgnoreSignals(self.ignore_signals, getattr(derived, "worker_init_fn", None))
            derived = derive_loader(derived, worker_init_fn=init)
        self._cache[key] = (loader, derived, sharded)
        return derived, sharded
