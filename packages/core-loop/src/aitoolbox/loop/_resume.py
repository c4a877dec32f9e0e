"""Mid-epoch resume: replay an epoch's sampling and skip its consumed batches without fetching them.

Why the order matters: a DataLoader iterator draws its base seed from torch's RNG (or the loader's generator) when it
is created, and a ``RandomSampler`` draws its permutation seed at its first ``next()``. Restoring the RNG state of
the *epoch start* and re-creating the iterator replays both draws, so the resumed epoch uses the same permutation.
The skip happens inside the batch sampler (index lists only: no dataset access, no collation), then the RNG state of
the checkpoint is put back before the first real batch is fetched.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["capture_epoch_rng", "restore_epoch_rng", "skip_batches"]


def _generators(loader: object) -> list[torch.Generator]:
    found: list[torch.Generator] = []
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    for gen in candidates:
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def capture_epoch_rng(loader: object) -> dict[str, Any]:
    """The RNG states that decide an epoch's sampling: torch's global CPU RNG and the loader's generators."""
    return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in _generators(loader)]}


def restore_epoch_rng(loader: object, state: dict[str, Any]) -> None:
    """Put back what :func:`capture_epoch_rng` returned."""
    torch.set_rng_state(state["torch"])
    gens = _generators(loader)
    if len(gens) != len(state["generators"]):
        saved = len(state["generators"])
        raise ValueError(
            f"the training loader has {len(gens)} random generators but the checkpoint saved {saved}; "
            "resume with the same DataLoader configuration (shuffle, generator) as the interrupted run"
        )
    for gen, gen_state in zip(gens, state["generators"], strict=True):
        gen.set_state(gen_state)


class _SkippingSampler:
    """Wraps a (batch) sampler: its first ``skip`` items are drawn and dropped, then ``after_skip()`` runs."""

    def __init__(self, inner: Any, skip: int, after_skip: Callable[[], None]) -> None:
        self.inner = inner
        self.skip = skip
        self.after_skip = after_skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.inner)
        for _ in itertools.islice(it, self.skip):
            pass
        self.after_skip()
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _skip_iterable(loader: Iterable[Any], skip: int, after_skip: Callable[[], None]) -> Iterator[Any]:
    it = iter(loader)
    for _ in itertools.islice(it, skip):
        pass
    after_skip()
    yield from it


def skip_batches(loader: Iterable[Any], skip: int, after_skip: Callable[[], None]) -> Iterable[Any]:
    """An iterable over ``loader`` without its first ``skip`` batches.

    For a map-style ``DataLoader`` the skip is done on a shallow copy whose batch sampler drops the first ``skip``
    index lists, so skipped batches are never fetched or collated (any ``num_workers``). Other iterables are advanced
    batch by batch. ``after_skip`` runs once the skip is done, before the first kept batch is fetched.
    """
    if skip <= 0:
        return loader
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
        clone = copy.copy(loader)
        object.__setattr__(clone, "_iterator", None)  # persistent workers belong to the original
        if loader.batch_sampler is not None:
            object.__setattr__(clone, "batch_sampler", _SkippingSampler(loader.batch_sampler, skip, after_skip))
        else:
            object.__setattr__(clone, "sampler", _SkippingSampler(loader.sampler, skip, after_skip))
        return clone
    return _SkipIterable(loader, skip, after_skip)


class _SkipIterable:
    def __init__(self, loader: Iterable[Any], skip: int, after_skip: Callable[[], None]) -> None:
        self.loader, self.skip, self.after_skip = loader, skip, after_skip

    def __iter__(self) -> Iterator[Any]:
        return _skip_iterable(self.loader, self.skip, self.after_skip)
