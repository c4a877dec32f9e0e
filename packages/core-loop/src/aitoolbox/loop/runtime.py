"""Where a fit runs: one process (:class:`Runtime`), or one rank of a distributed job
(:class:`~aitoolbox.loop._distributed.DistributedContext`, the same interface).

The loop and its extensions call these methods whatever the run, instead of branching on distributed state: setup
(``select_runtime``), wrap the model, shard the loaders, reduce, agree to stop, gather, broadcast, and say whether
this process is the one that writes. In one process every collective is the identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

__all__ = ["Runtime"]


class Runtime:
    """A single-process run: every collective is the identity and this process writes (unless it is a non-zero
    rank of a launch that has not set up its process group yet)."""

    #: True for one rank of a distributed job
    distributed: ClassVar[bool] = False

    def __init__(self, rank: int = 0) -> None:
        self.rank = rank
        self.world_size = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and results and logs summaries."""
        return self.rank == 0

    def shard_train(self, loader: Iterable[Any], seed: int) -> Iterable[Any]:
        """The training loader this process iterates."""
        return loader

    def shard_eval(self, loader: Iterable[Any]) -> Iterable[Any] | None:
        """This process's share of an evaluation loader, or ``None`` when it evaluates all of it."""
        return None

    def set_epoch(self, loader: Iterable[Any], epoch: int) -> None:
        """Tell the training loader's sampler which epoch starts (a distributed sampler reshuffles by it)."""

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes."""
        return [float(v) for v in values]

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on at least one."""
        return flag

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Process ``src``'s ``obj``, on every process."""
        return obj

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        return [obj]

    def barrier(self) -> None:
        """Wait until every process reaches this point."""

    def gather_predictions(
        self, local: tuple[Any, Any, dict[str, Any] | None], n: int
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        """Every process's predictions of its evaluation share, as one set in dataset order."""
        return local

    def record_failure(self, err: Exception) -> None:
        """Report ``err`` as this process's failure (torchrun's root-cause summary)."""

    def release(self) -> None:
        """Drop what this runtime holds of process groups (at exit)."""
