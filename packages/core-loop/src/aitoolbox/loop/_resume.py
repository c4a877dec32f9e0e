"""Mid-epoch resume: replay an epoch's sampling and skip its consumed batches without fetching them.

Why the order matters: a DataLoader iterator draws its base seed from torch's RNG (or the loader's generator) when it
is created, and a ``RandomSampler`` draws its permutation seed at its first ``next()``. Restoring the RNG state of
the *epoch start* and re-creating the iterator replays both draws, so the resumed epoch uses the same permutation.
The skip happens inside the batch sampler (index lists only: no dataset access, no collation), then the RNG state of
the checkpoint is put back before the first real batch is fetched.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from aitoolbox.loop._loaders import derive_loader
from aitoolbox.loop.elastic import elastic_sampler
from aitoolbox.loop.errors import LoopConfigError, ResumeMismatchError

logger = logging.getLogger(__name__)

__all__ = [
    "capture_data_rng",
    "capture_epoch_rng",
    "check_resume_plan",
    "data_layout",
    "layout_changes",
    "load_loop_state",
    "not_replayed",
    "restore_data_rng",
    "restore_epoch_rng",
    "saved_world_size",
    "skip_batches",
]


# samplers whose only randomness is drawn from a torch.Generator (their own, or torch's global one) when an epoch's
# iteration starts: restoring that generator replays them
_REPLAYABLE_SAMPLERS = frozenset(
    {
        "SequentialSampler",
        "RandomSampler",
        "SubsetRandomSampler",
        "WeightedRandomSampler",
        "BatchSampler",
        "DistributedSampler",
        "ElasticSampler",
        "_SkippingSampler",
        "_InfiniteConstantSampler",
    }
)


def _samplers(loader: object) -> list[Any]:
    """The loader's sampler, batch sampler and the batch sampler's inner sampler (each once)."""
    found: list[Any] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        if obj is not None and all(obj is not s for s in found):
            found.append(obj)
    return found


def _generators(loader: object) -> list[torch.Generator]:
    found: list[torch.Generator] = []
    candidates = [getattr(loader, "generator", None), *(getattr(s, "generator", None) for s in _samplers(loader))]
    for gen in candidates:
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _stateful_samplers(loader: object) -> list[Any]:
    return [
        s
        for s in _samplers(loader)
        if callable(getattr(s, "state_dict", None)) and callable(getattr(s, "load_state_dict", None))
    ]


def capture_data_rng(loader: object) -> dict[str, Any]:
    """What decides the loader's next epoch besides torch's global RNG: its own generators (``DataLoader(generator=)``,
    ``RandomSampler(generator=)``...) and the ``state_dict()`` of samplers that have one."""
    return {
        "generators": [g.get_state() for g in _generators(loader)],
        "samplers": [s.state_dict() for s in _stateful_samplers(loader)],
    }


def restore_data_rng(loader: object, state: dict[str, Any]) -> None:
    """Put back what :func:`capture_data_rng` returned, refusing a loader built differently."""
    gens = _generators(loader)
    if len(gens) != len(state["generators"]):
        saved = len(state["generators"])
        raise ResumeMismatchError(
            f"the training loader has {len(gens)} random generator(s) but the checkpoint saved {saved}; "
            "resume with the same DataLoader configuration (shuffle, generator=, sampler) as the interrupted run"
        )
    for gen, gen_state in zip(gens, state["generators"], strict=True):
        gen.set_state(gen_state)
    samplers = _stateful_samplers(loader)
    saved_samplers = state.get("samplers", [])
    if len(samplers) != len(saved_samplers):
        raise ResumeMismatchError(
            f"the training loader has {len(samplers)} sampler(s) with state_dict() but the checkpoint saved "
            f"{len(saved_samplers)}; resume with the same sampler as the interrupted run"
        )
    for sampler, sampler_state in zip(samplers, saved_samplers, strict=True):
        sampler.load_state_dict(sampler_state)


def data_layout(loader: object) -> dict[str, Any]:
    """What decides which batches an epoch's first N are: batch size, dataset length, batches, sampler kind."""
    dataset = getattr(loader, "dataset", None)
    try:
        length: int | None = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        length = None
    try:
        batches: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        batches = None
    elastic = elastic_sampler(loader)
    return {
        "batch_size": getattr(loader, "batch_size", None) or getattr(elastic, "global_batch_size", None),
        "dataset_len": length,
        "batches": batches,
        "sampler": type(getattr(loader, "sampler", None)).__name__,
    }


def layout_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The differences between two :func:`data_layout` results, in words."""
    labels = {
        "batch_size": "batch size",
        "dataset_len": "dataset length",
        "batches": "batches per epoch",
        "sampler": "sampler (shuffle)",
    }
    return [
        f"{label} {saved[key]!r} -> {current[key]!r}"
        for key, label in labels.items()
        if key in saved and saved[key] != current.get(key)
    ]


def capture_epoch_rng(loader: object) -> dict[str, Any]:
    """The RNG states that decide an epoch's sampling: torch's global CPU RNG and the loader's own streams."""
    return {"torch": torch.get_rng_state(), **capture_data_rng(loader)}


def restore_epoch_rng(loader: object, state: dict[str, Any]) -> None:
    """Put back what :func:`capture_epoch_rng` returned."""
    torch.set_rng_state(state["torch"])
    restore_data_rng(loader, state)


def not_replayed(loader: object, *, mid_epoch: bool) -> list[str]:
    """What a resume cannot reproduce for ``loader``, in words (empty when the resume is exact).

    Exact: map-style DataLoaders whose samplers are torch's (or have ``state_dict``/``load_state_dict``), with
    randomness from torch's global RNG or their own ``torch.Generator``. Not reproduced: a custom sampler without
    ``state_dict``; an ``IterableDataset`` without ``state_dict``; and, for the rest of an epoch resumed in its middle,
    random draws made inside the dataset by DataLoader worker processes (each worker's stream depends on the batches it
    already produced; the epochs after it are exact).
    """
    from torch.utils.data import DataLoader, IterableDataset

    if not isinstance(loader, DataLoader):
        return [f"the training loader is a {type(loader).__name__}, not a DataLoader: its order cannot be checked"]
    problems = []
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        if not callable(getattr(dataset, "state_dict", None)):
            problems.append(
                f"the training set is an IterableDataset ({type(dataset).__name__}) without state_dict(): it is "
                "iterated again from its start"
                + (", the consumed batches are fetched and dropped" if mid_epoch else "")
                + "; any state it keeps of its own is not restored"
            )
    else:
        stateful = {id(s) for s in _stateful_samplers(loader)}
        for sampler in _samplers(loader):
            name = type(sampler).__name__
            if id(sampler) not in stateful and name not in _REPLAYABLE_SAMPLERS:
                problems.append(
                    f"the sampler {name} is not one of torch's and has no state_dict()/load_state_dict(): its order "
                    "after the resume may differ from the interrupted run's (give it those two methods)"
                )
    if mid_epoch and loader.num_workers > 0:
        problems.append(
            f"the interrupted epoch is resumed in its middle with num_workers={loader.num_workers}: random draws "
            "inside the dataset (augmentation) in the workers are not replayed for the rest of that epoch (the "
            "epochs after it are exact)"
        )
    return problems


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
        if loader.batch_sampler is not None:
            return derive_loader(loader, batch_sampler=_SkippingSampler(loader.batch_sampler, skip, after_skip))
        return derive_loader(loader, sampler=_SkippingSampler(loader.sampler, skip, after_skip))
    return _SkipIterable(loader, skip, after_skip)


class _SkipIterable:
    def __init__(self, loader: Iterable[Any], skip: int, after_skip: Callable[[], None]) -> None:
        self.loader, self.skip, self.after_skip = loader, skip, after_skip

    def __iter__(self) -> Iterator[Any]:
        return _skip_iterable(self.loader, self.skip, self.after_skip)


def saved_world_size(plan: dict[str, Any]) -> int | None:
    """The number of processes that saved a loop state (None: not recorded, a checkpoint of an older version)."""
    if plan.get("world_size") is not None:
        return int(plan["world_size"])
    ranks = plan.get("epoch_loss_sum_ranks")
    return len(ranks) if ranks else None


def check_resume_plan(state: Any, layout: dict[str, Any], world_size: int = 1, elastic: Any = None) -> None:
    """A mid-epoch resume skips the consumed batches by count: refuse (or, not strict, warn) when the count no
    longer means them. ``state`` is the loop's LoopState, ``layout`` the training loader's :func:`data_layout`,
    ``elastic`` its :class:`~aitoolbox.loop.elastic.ElasticSampler` (the position is then counted in global steps,
    and carried to another world size or accumulation)."""
    plan = state.resume_plan
    changes = layout_changes(plan.get("data_layout") or {}, layout)
    saved_world = saved_world_size(plan)
    if elastic is not None and not changes:
        _carry_elastic_position(plan, saved_world or world_size, world_size, state.grad_accumulation)
        return
    if plan["grad_accumulation"] != state.grad_accumulation:
        changes.append(f"grad_accumulation {plan['grad_accumulation']} -> {state.grad_accumulation}")
    moved = saved_world is not None and saved_world != world_size
    if moved:
        changes.append(f"processes (world size) {saved_world} -> {world_size}")
    if not changes:
        return
    what = (
        f"the run is resumed at batch {plan['batch_in_epoch']} of epoch {plan['epoch']}, but since it was "
        f"saved: {', '.join(changes)}"
    )
    if state.resume_strict:
        state.resume_plan = None
        elastic_hint = (
            "; a DistributedSampler's shards depend on the number of processes: for a data order that does not, "
            "train with DataLoader(dataset, batch_sampler=ElasticSampler(dataset, global_batch_size=G)) (exact on "
            "any world size that divides G), or resume on "
            f"{saved_world} process(es)"
            if moved
            else ""
        )
        raise ResumeMismatchError(
            f"{what}; the skipped batches would not be the ones already trained on{elastic_hint}. Resume with the "
            "original settings, from an epoch-end checkpoint, or accept the difference (allow_resume_changes=True "
            "in fit, strict=False in load_state_dict)"
        )
    consequence = (
        ": each process skips its first batches of its new shard, so part of the epoch's samples will be trained "
        "twice and as many not at all (the next epochs are exact)"
        if moved
        else ""
    )
    logger.warning("%s: continuing anyway, as asked%s", what, consequence)


def _carry_elastic_position(plan: dict[str, Any], saved_world: int, world_size: int, accumulation: int) -> None:
    """Express an elastic run's position (whole global steps) in this run's micro-batches, and its partial epoch
    loss as the same mean over this rank's share."""
    steps, saved_batches = plan["batch_in_epoch"] // plan["grad_accumulation"], plan["batch_in_epoch"]
    batches = steps * accumulation
    if batches != saved_batches or saved_world != world_size:
        ranks = plan.get("epoch_loss_sum_ranks")
        total = sum(ranks) if ranks and len(ranks) == saved_world else plan["epoch_loss_sum"] * saved_world
        plan["epoch_loss_sum"] = total / (saved_world * saved_batches) * batches
    plan["batch_in_epoch"] = batches


def load_loop_state(loop: Any, state: dict[str, Any], *, strict: bool) -> None:
    """``TrainLoop.load_state_dict``: GradScaler, position and resume data; what cannot be replayed is logged."""
    if state.get("grad_scaler") is not None:
        if loop.grad_scaler is None:
            raise LoopConfigError("the checkpoint holds GradScaler state but use_amp does not use fp16 here")
        loop.grad_scaler.load_state_dict(state["grad_scaler"])
    runtime = loop.runtime
    loop.state.load_state_dict(state, strict=strict, rank=runtime.rank, world_size=runtime.world_size)
    problems = not_replayed(loop.train_loader, mid_epoch=bool(state["batch_in_epoch"]))
    if problems and runtime.is_main:
        logger.warning("the resumed run may differ from the interrupted one: %s", "; ".join(problems))
    saved_seed = state.get("sampler_seed")
    if saved_seed is not None and saved_seed != loop.state.sampler_seed:
        loop.state.sampler_seed = int(saved_seed)  # the interrupted run's shuffling (kept by a distributed start)
        loop.loaders.reset(sampler_seed=loop.state.sampler_seed)
