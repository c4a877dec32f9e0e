"""Distributed data parallel training under ``torchrun`` (or torch's elastic launcher): process group, DDP, sharding
of the loaders, and the few collectives the loop needs (sums, "any rank stopped", gathers).

The loop detects a launch from the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), initialises
the process group (nccl on CUDA, gloo on CPU), trains each rank on its own device and shard, and reduces what it
reports (losses, predictions) so that every rank holds the same history and only rank 0 writes. Small control
collectives (flags, objects, scalars) run on a gloo group, so they never touch the CUDA stream.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aitoolbox.loop._loaders import derive_loader
from aitoolbox.loop.errors import LoopConfigError

__all__ = [
    "DistributedContext",
    "ShardedEvalSampler",
    "launched",
    "launched_rank",
    "parent_device",
    "rank_device",
    "setup",
    "shard_eval_loader",
    "shard_train_loader",
]

logger = logging.getLogger(__name__)

_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def launched() -> bool:
    """True in a process started by torchrun / torch's elastic launcher (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""
    return all(name in os.environ for name in _ENV)


def launched_rank() -> int:
    """This process's global rank (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def rank_device(device: str | torch.device | None) -> str | torch.device | None:
    """In a launched process with CUDA, ``None`` or ``'cuda'`` means this rank's GPU, ``cuda:LOCAL_RANK``."""
    if not launched() or not torch.cuda.is_available():
        return device
    if device is None or (torch.device(device).type == "cuda" and torch.device(device).index is None):
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def parent_device(device: str | torch.device | None, cuda_device_idx: int | None) -> torch.device:
    """The device for a process that will fork distributed workers, decided without initialising CUDA.

    ``torch.cuda.device_count()`` asks NVML where it can; ``is_available()`` would initialise the driver, after
    which forked workers cannot use CUDA.
    """
    if device is not None:
        dev = torch.device(device)
        if dev.type != "cuda":
            return dev
    elif torch.cuda.device_count() == 0:
        return torch.device("cpu")
    index = cuda_device_idx if device is None or torch.device(device).index is None else torch.device(device).index
    return torch.device("cuda", index or 0)


class _LossForward(nn.Module):
    """Routes ``get_loss`` through ``forward``, so DDP sees a forward pass (and arms its gradient all-reduce)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, criterion: Any, device: torch.device) -> torch.Tensor:
        return self.model.get_loss(batch, criterion, device)  # type: ignore[operator,no-any-return]


@dataclass
class DistributedContext:
    """This process's place in a distributed run, and the collectives the loop uses.

    Attributes:
        rank: global rank; 0 writes checkpoints, results and uploads, logs summaries and shows the progress bar.
        local_rank: rank on this node (its GPU index).
        world_size: number of processes.
        backend: the default group's backend (``nccl`` or ``gloo``).
        owns_group: whether this library initialised the process group (and destroys it at exit).
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str
    owns_group: bool
    control_group: Any = None  # a gloo group for CPU-side collectives when the default group is nccl

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- collectives (CPU, gloo)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks."""
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t, group=self.control_group)
        return [float(v) for v in t.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj``, on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self.control_group)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control_group)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.control_group)

    def wrap(self, model: nn.Module, device: torch.device, options: dict[str, Any]) -> nn.Module:
        """``model`` (a TTModel) in DistributedDataParallel, called as ``ddp(batch, criterion, device)``."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(_LossForward(model), device_ids=device_ids, **options)


def setup(device: torch.device) -> DistributedContext:
    """Initialise the process group from torchrun's environment (unless the user already did) for ``device``."""
    import torch.distributed as dist

    rank, local_rank, world = (int(os.environ[name]) for name in _ENV)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        owns = True
        atexit.register(_destroy)
        logger.debug("process group initialised: rank %d of %d, backend %s", rank, world, backend)
    backend = str(dist.get_backend())
    control = None if backend == "gloo" else dist.new_group(backend="gloo")
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise LoopConfigError(
            f"the initialised process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match the "
            f"launch environment (RANK={rank}, WORLD_SIZE={world})"
        )
    return DistributedContext(rank, local_rank, world, backend, owns, control)


# Objects holding DDP wrappers or process groups, released at exit before the groups are destroyed (see _destroy).
_holders: weakref.WeakSet[Any] = weakref.WeakSet()


def release_at_exit(holder: Any) -> None:
    """Registers ``holder``: at exit its ``_release_distributed()`` drops what it holds of the process groups."""
    _holders.add(holder)


def _destroy() -> None:
    """At exit: drop the DDP wrappers (their reducers hold the process group) and collect the reference cycles a
    loop lives in, then destroy the groups. Otherwise a group outlives ``destroy_process_group()`` and is torn down
    during interpreter finalisation, where gloo's teardown now and then aborts the process ("terminate called
    without an active exception") after a successful run."""
    import torch.distributed as dist

    for holder in list(_holders):
        holder._release_distributed()
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def record_failure(err: Exception) -> None:
    """Write ``err`` to torchrun's error file for this rank, so the job's root-cause summary shows its traceback."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    try:
        ErrorHandler().record_exception(err)
        if _lost_peer(err):
            _record_later(os.environ["TORCHELASTIC_ERROR_FILE"])
    except Exception:  # the report is best effort; the original error is what matters
        logger.debug("could not write torchrun's error file", exc_info=True)


# what gloo raises on the ranks that lose a peer that failed on its own
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def _lost_peer(err: BaseException) -> bool:
    return any(text in str(err) for text in _PEER_LOST)


def _record_later(path: str) -> None:
    """torchrun names the failure with the smallest timestamp (whole seconds; ties go to the lowest rank) as the
    root cause. A rank that failed only because a peer died records one second later, so that the summary names the
    rank whose own error started it, not rank 0's lost connection."""
    import json

    with open(path) as fp:
        data = json.load(fp)
    info = data["message"]["extraInfo"]
    info["timestamp"] = str(int(info["timestamp"]) + 1)
    with open(path, "w") as fp:
        json.dump(data, fp)


# -------------------------------------------------------------------- sharding


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


def shard_train_loader(loader: Any, ctx: DistributedContext, seed: int) -> Any:
    """The training loader with a ``DistributedSampler`` (shuffled if the user's was), every other option kept."""
    from torch.utils.data import BatchSampler, DistributedSampler

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
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    if loader.batch_sampler is not None:
        return derive_loader(
            loader, sampler=sampler, batch_sampler=BatchSampler(sampler, loader.batch_size, loader.drop_last)
        )
    return derive_loader(loader, sampler=sampler)


def shard_eval_loader(loader: Any, ctx: DistributedContext) -> Any | None:
    """An evaluation loader over this rank's strided share (no padding); None when it cannot be sharded."""
    from torch.utils.data import BatchSampler

    if _plain_sampling(loader) is None:
        return None
    sampler = ShardedEvalSampler(len(loader.dataset), ctx.rank, ctx.world_size)
    if loader.batch_sampler is not None:
        return derive_loader(loader, sampler=sampler, batch_sampler=BatchSampler(sampler, loader.batch_size, False))
    return derive_loader(loader, sampler=sampler)


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the loader's DistributedSampler, so each epoch has its own (reproducible) order."""
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


# -------------------------------------------------------------------- putting gathered predictions back in order


def _length(x: Any) -> int | None:
    if isinstance(x, torch.Tensor) or (hasattr(x, "shape") and hasattr(x, "dtype")):
        return int(x.shape[0]) if len(x.shape) else None
    if isinstance(x, list):
        return len(x)
    return None


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
    if isinstance(first, torch.Tensor) or (hasattr(first, "shape") and hasattr(first, "dtype")):
        if isinstance(first, torch.Tensor):
            concatenate, empty = torch.cat, torch.empty
        else:  # a numpy array
            import numpy as np

            concatenate, empty = np.concatenate, np.empty
        if not per_sample:
            return concatenate(parts)
        out = empty((n, *first.shape[1:]), dtype=first.dtype)
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
    ctx: DistributedContext, local: tuple[Any, Any, dict[str, Any] | None], n: int
) -> tuple[Any, Any, dict[str, Any] | None]:
    """Every rank's ``(y_pred, y_true, metadata)`` of its strided shard, as one set in dataset order."""
    gathered = ctx.gather(local)
    y_pred = interleave([g[0] for g in gathered], n)
    y_true = interleave([g[1] for g in gathered], n)
    meta = None
    if gathered[0][2] is not None:
        meta = {key: interleave([g[2][key] for g in gathered], n) for key in gathered[0][2]}
    return y_pred, y_true, meta
