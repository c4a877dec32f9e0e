"""Distributed sharding: the training loader under a ``DistributedSampler``, evaluation loaders over strided
shares (no padding), and the gathered predictions put back in dataset order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from aitoolbox.loop._batch import is_array
from aitoolbox.loop._loaders import derive_loader
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.runtime import Runtime

__all__ = [
    "ShardedEvalSampler",
    "gather_predictions",
    "interleave",
    "set_epoch",
    "shard_eval_loader",
    "shard_train_loader",
]


class ShardedEvalSampler(torch.utils.data.Sampler[int]):
    """Rank ``rank``'s share of ``range(n)`` for evaluation: ``rank, rank + world, ...``.

    Unlike ``DistributedSampler`` it never pads, so every sample is evaluated exactly once across the ranks, and
    the strided layout lets the gathered predictions be put back in dataset order.

    Example:
        >>> list(ShardedEvalSampler(7, rank=1, world_size=3))
        [1, 4]
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Any:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _plain_sampling(loader: Any) -> bool | None:
    """For a DataLoader over a map-style dataset with torch's own sampling: shuffle or not; None if not shardable."""
    from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler

    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return None
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler:
        return None
    sampler = loader.sampler
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True
    if type(sampler) is SequentialSampler:
        return False
    return None


def shard_train_loader(loader: Iterable[Any], ctx: Runtime, seed: int) -> Iterable[Any]:
    """The training loader with a ``DistributedSampler`` (shuffled if the user's was), every other option kept."""
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader  # already sharded by the user
    shuffle = _plain_sampling(loader)
    if shuffle is None:
        raise LoopConfigError(
            "distributed training shards the train_loader with a DistributedSampler, which needs a DataLoader over "
            f"a map-style dataset with shuffle=True/False (got {type(loader).__name__} with "
            f"{type(getattr(loader, 'sampler', None)).__name__}); for a custom sampler or an IterableDataset, "
            "shard by rank yourself (e.g. DataLoader(sampler=DistributedSampler(...)))"
        )
    assert isinstance(loader, DataLoader)  # _plain_sampling says so
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    batches = loader.batch_sampler
    if isinstance(batches, BatchSampler):  # its own size and drop_last (a DataLoader(batch_sampler=) has no others)
        return derive_loader(
            loader, sampler=sampler, batch_sampler=BatchSampler(sampler, batches.batch_size, batches.drop_last)
        )
    return derive_loader(loader, sampler=sampler)


def shard_eval_loader(loader: Any, ctx: Runtime) -> Iterable[Any] | None:
    """An evaluation loader over this rank's strided share (no padding); None when it cannot be sharded."""
    from torch.utils.data import BatchSampler

    if _plain_sampling(loader) is None:
        return None
    sampler = ShardedEvalSampler(len(loader.dataset), ctx.rank, ctx.world_size)
    batches = loader.batch_sampler
    if isinstance(batches, BatchSampler):
        return derive_loader(loader, sampler=sampler, batch_sampler=BatchSampler(sampler, batches.batch_size, False))
    return derive_loader(loader, sampler=sampler)


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the loader's DistributedSampler, so each epoch has its own (reproducible) order."""
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


# -------------------------------------------------------------------- putting gathered predictions back in order


def _length(x: Any) -> int | None:
    if is_array(x):
        return int(x.shape[0]) if len(x.shape) else None
    if isinstance(x, list):
        return len(x)
    return None


def _numpy() -> Any:
    import numpy as np

    return np


def interleave(parts: list[Any], n: int) -> Any:
    """Rank-ordered shards of a strided split (rank ``r`` holds items ``r, r + W, ...``) back in dataset order.

    Falls back to concatenation in rank order when the shards are not per-sample (their lengths do not add up to
    ``n``).

    Example:
        >>> interleave([[0, 2, 4], [1, 3]], 5)
        [0, 1, 2, 3, 4]
    """
    if not parts or parts[0] is None:
        return None
    world = len(parts)
    lengths = [_length(p) for p in parts]
    first = parts[0]
    per_sample = all(length is not None for length in lengths) and sum(lengths) == n  # type: ignore[arg-type]
    if is_array(first):
        if not per_sample:
            return torch.cat(parts) if isinstance(first, torch.Tensor) else _numpy().concatenate(parts)
        shape = (n, *first.shape[1:])
        out: Any = (torch if isinstance(first, torch.Tensor) else _numpy()).empty(shape, dtype=first.dtype)
        for r, part in enumerate(parts):
            out[r::world] = part
        return out
    if isinstance(first, list):
        if not per_sample:
            return [x for p in parts for x in p]
        out_list: list[Any] = [None] * n
        for r, part in enumerate(parts):
            out_list[r::world] = part
        return out_list
    return parts


def gather_predictions(
    ctx: Runtime, local: tuple[Any, Any, dict[str, Any] | None], n: int
) -> tuple[Any, Any, dict[str, Any] | None]:
    """Every rank's ``(y_pred, y_true, metadata)`` of its strided shard, as one set in dataset order."""
    gathered = ctx.gather(local)
    y_pred = interleave([g[0] for g in gathered], n)
    y_true = interleave([g[1] for g in gathered], n)
    meta = None
    if gathered[0][2] is not None:
        meta = {key: interleave([g[2][key] for g in gathered], n) for key in gathered[0][2]}
    return y_pred, y_true, meta
