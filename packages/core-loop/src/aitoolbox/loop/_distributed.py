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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from aitoolbox.loop._sharding import gather_predictions, set_epoch, shard_eval_loader, shard_train_loader
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.runtime import Runtime

__all__ = [
    "DistributedContext",
    "launched",
    "launched_rank",
    "parent_device",
    "rank_device",
    "setup",
    "start_rank",
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


@dataclass(eq=False)  # compared and hashed by identity (registered for release at exit)
class DistributedContext(Runtime):
    """This process's place in a distributed run, and the collectives the loop uses (the distributed
    :class:`~aitoolbox.loop.runtime.Runtime`).

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

    distributed: ClassVar[bool] = True

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

    def shard_train(self, loader: Iterable[Any], seed: int) -> Iterable[Any]:
        return shard_train_loader(loader, self, seed)

    def shard_eval(self, loader: Iterable[Any]) -> Iterable[Any] | None:
        return shard_eval_loader(loader, self)

    def set_epoch(self, loader: Iterable[Any], epoch: int) -> None:
        set_epoch(loader, epoch)

    def gather_predictions(
        self, local: tuple[Any, Any, dict[str, Any] | None], n: int
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        return gather_predictions(self, local, n)

    def record_failure(self, err: Exception) -> None:
        record_failure(err)

    def release(self) -> None:
        """Drops the control group, which would otherwise keep the process groups alive into interpreter
        finalisation."""
        self.control_group = None


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
    """Registers ``holder``: at exit its ``release()`` drops what it holds of the process groups."""
    _holders.add(holder)


def _destroy() -> None:
    """At exit: drop the DDP wrappers (their reducers hold the process group) and collect the reference cycles a
    loop lives in, then destroy the groups. Otherwise a group outlives ``destroy_process_group()`` and is torn down
    during interpreter finalisation, where gloo's teardown now and then aborts the process ("terminate called
    without an active exception") after a successful run."""
    import torch.distributed as dist

    for holder in list(_holders):
        holder.release()
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


def start_rank(loop: Any) -> None:
    """In a torchrun-launched process, once: process group, this rank's device, DDP and the sampling seed, set on
    ``loop`` (a TrainLoop). Elsewhere nothing."""
    if loop.runtime.distributed or not launched():
        return
    from aitoolbox.loop._device import resolve_device

    device, index = loop._device_request
    loop.device = resolve_device(rank_device(device), index)
    loop.tt_model.to(loop.device)
    loop.runtime = ctx = setup(loop.device)
    # rank 0's seed, unless a resume (load_state_dict before fit) restored the saved run's: its shuffling continues
    seed = loop.state.sampler_seed
    loop.state.sampler_seed = int(ctx.broadcast(torch.initial_seed() % 2**62 if seed is None else seed))
    loop.strategy.amp_dtype = loop.amp.dtype
    loop.strategy.check_runtime(ctx)
    loop.strategy.wrap(loop.tt_model, loop.device, ctx)
    loop.strategy.rebind_optimizers(loop.tt_model, loop.optimizers)
    if ctx.owns_group:
        release_at_exit(ctx)
        release_at_exit(loop.strategy)
    loop.loaders.reset(ctx, loop.state.sampler_seed)
    if ctx.is_main:
        logger.info("%r: %d processes, backend %s", loop.strategy, ctx.world_size, ctx.backend)
