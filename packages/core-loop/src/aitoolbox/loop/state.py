"""The loop's state as one object: position (epoch, iteration, batch in the epoch), targets, stop requests, history,
the running epoch's loss accumulators, and what a resume carries from a checkpoint to the next ``fit``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import torch

from aitoolbox.loop.elastic import DataOrderLog
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.history import TrainingHistory

__all__ = ["LoopState", "StateField"]

T = TypeVar("T")


class LoopState:
    """Counters, history and resume data of one :class:`~aitoolbox.loop.TrainLoop` (read through its attributes)."""

    __slots__ = (
        "batch_in_epoch",
        "data_rng_pending",
        "early_stop",
        "epoch",
        "epoch_batches",
        "epoch_complete",
        "epoch_length",
        "epoch_start_rng",
        "grad_accumulation",
        "history",
        "iteration",
        "last_loss",
        "loss_sum_dev",
        "loss_sum_host",
        "messages",
        "num_epochs",
        "num_iterations",
        "order_log",
        "resume_plan",
        "resume_strict",
        "resumed",
        "sampler_seed",
        "stop_reason",
        "total_iteration_idx",
    )

    def __init__(self) -> None:
        self.history = TrainingHistory()
        #: 0-based index of the epoch being trained; after training, of the last one
        self.epoch = 0
        #: training batches done, over every epoch and fit (what num_iterations counts)
        self.iteration = 0
        #: 0-based global index of the batch being trained (the last one's after it); -1 before the first
        self.total_iteration_idx = -1
        self.batch_in_epoch = 0
        self.epoch_complete = False
        self.num_epochs = 0
        self.num_iterations = 0
        self.grad_accumulation = 1
        self.early_stop = False
        self.stop_reason: str | None = None
        self.last_loss: torch.Tensor | None = None
        self.loss_sum_host = 0.0
        self.loss_sum_dev: torch.Tensor | None = None
        self.epoch_batches = 0
        #: the current epoch's batch count (resumed ones included); None when the loader has no length
        self.epoch_length: int | None = None
        self.epoch_start_rng: dict[str, Any] | None = None
        self.resume_plan: dict[str, Any] | None = None
        self.data_rng_pending: dict[str, Any] | None = None
        self.resume_strict = True
        #: set by :meth:`load_state_dict`: the next fit's num_epochs/num_iterations are totals from the run's start
        self.resumed = False
        #: ``tl.message_service``, made on first use (its epoch-end purge costs nothing until then)
        self.messages: Any = None
        #: the distributed shuffling seed: set when a distributed fit starts (rank 0's), or restored by a resume
        self.sampler_seed: int | None = None
        #: the data-order log (kept while the training loader has an ElasticSampler)
        self.order_log = DataOrderLog()

    @property
    def epochs_done(self) -> int:
        return self.epoch + 1 if self.epoch_complete else self.epoch

    def request_stop(self, reason: str | None = None) -> None:
        """Stop training at the end of the current step (batch hooks) or epoch (epoch hooks); the first reason
        given is kept."""
        self.early_stop = True
        self.stop_reason = self.stop_reason or reason

    def begin_fit(self, num_epochs: int, num_iterations: int, grad_accumulation: int) -> None:
        """``num_epochs``/``num_iterations`` more from here, or, after a resume (:meth:`load_state_dict`), in total
        from the run's start (0: not the limit)."""
        epochs, iterations = (0, 0) if self.resumed else (self.epochs_done, self.iteration)
        self.resumed = False
        self.num_epochs = epochs + num_epochs if num_epochs else 0
        self.num_iterations = iterations + num_iterations if num_iterations else 0
        self.grad_accumulation = grad_accumulation
        self.early_stop = False
        self.stop_reason = None

    def done(self) -> bool:
        if self.early_stop:
            return True
        if self.num_iterations:
            return self.iteration >= self.num_iterations
        return self.epochs_done >= self.num_epochs

    def next_epoch(self) -> None:
        """Between epochs ``epoch`` stays the last one's index; it moves when the next one begins."""
        if self.epoch_complete:
            self.epoch += 1
            self.epoch_complete = False
        self.history.epoch = self.epoch

    def begin_epoch(self, skip: int, loss_sum: float, device: torch.device) -> None:
        self.epoch_complete = False
        self.batch_in_epoch = skip
        self.loss_sum_host = loss_sum
        cpu = device.type == "cpu"
        self.loss_sum_dev = None if cpu else torch.full((), loss_sum, dtype=torch.float32, device=device)

    def end_epoch(self, batches: int) -> float:
        """Close the epoch after ``batches`` batches; the sum of their losses (one host read)."""
        self.epoch_complete = True
        self.epoch_batches = batches
        dev = self.loss_sum_dev
        return self.loss_sum_host if dev is None else float(dev.item())

    def position(self) -> tuple[int, int, float]:
        """``(epoch, batch in it, its loss sum)`` to resume from: an epoch end is the next epoch's start."""
        if self.epoch_complete or self.batch_in_epoch == 0:
            return self.epoch + (1 if self.epoch_complete else 0), 0, 0.0
        if self.batch_in_epoch % self.grad_accumulation:
            raise LoopConfigError(
                f"the loop is inside a gradient accumulation (batch {self.batch_in_epoch} of epoch {self.epoch}, "
                f"grad_accumulation={self.grad_accumulation}); save state after an optimizer step"
            )
        dev = self.loss_sum_dev
        return self.epoch, self.batch_in_epoch, self.loss_sum_host if dev is None else float(dev.item())

    def state_dict(self, data_rng: Callable[[], dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Position, history and resume data (``data_rng()`` is called at epoch ends only), plus ``extra``."""
        epoch, batch, loss_sum = self.position()
        return {
            "epoch": epoch,
            "iteration": self.iteration,
            "batch_in_epoch": batch,
            "epoch_loss_sum": loss_sum,
            "accumulation_phase": 0,
            "grad_accumulation": self.grad_accumulation,
            "epoch_start_rng": self.epoch_start_rng if batch else None,
            "history": self.history.state_dict(),
            "history_epochs": self.history.epochs(),
            "sampler_seed": self.sampler_seed,
            "data_rng": None if batch else data_rng(),
            "data_order": self.order_log.state_dict() if self.order_log.steps else None,
            **extra,
        }

    def load_state_dict(self, state: dict[str, Any], *, strict: bool, rank: int, world_size: int) -> None:
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.history.load_state_dict(state["history"])
        self.history.load_epochs(state.get("history_epochs", {}))
        self.resume_plan = dict(state) if state["batch_in_epoch"] else None
        ranks = state.get("epoch_loss_sum_ranks")  # a distributed checkpoint: each rank's own partial epoch loss
        if self.resume_plan is not None and ranks and len(ranks) == world_size:
            self.resume_plan["epoch_loss_sum"] = float(ranks[rank])
        self.data_rng_pending = state.get("data_rng")
        self.order_log.load_state_dict(state.get("data_order"))
        self.resume_strict = strict
        self.resumed = True
        self.batch_in_epoch = int(state["batch_in_epoch"])
        # at an epoch boundary the loop stands where fit leaves it: epoch is the last complete epoch's index
        self.epoch_complete = self.batch_in_epoch == 0 and self.epoch > 0
        if self.epoch_complete:
            self.epoch -= 1
        self.total_iteration_idx = self.iteration - 1

    def export(self) -> dict[str, Any]:
        """What a launched rank 0 hands back to the process that called ``fit``."""
        return {
            "history": self.history.state_dict(),
            "history_epochs": self.history.epochs(),
            "epoch": self.epoch,
            "epoch_complete": self.epoch_complete,
            "iteration": self.iteration,
            "early_stop": self.early_stop,
            "stop_reason": self.stop_reason,
            "sampler_seed": self.sampler_seed,
            "data_order": self.order_log.state_dict(),
        }

    def adopt(self, data: dict[str, Any]) -> None:
        self.history.load_state_dict(data["history"])
        self.history.load_epochs(data["history_epochs"])
        self.epoch, self.iteration = data["epoch"], data["iteration"]
        self.epoch_complete = data["epoch_complete"]
        self.total_iteration_idx = self.iteration - 1
        self.early_stop, self.stop_reason = data["early_stop"], data["stop_reason"]
        self.sampler_seed = data["sampler_seed"]
        self.order_log.load_state_dict(data["data_order"])


class StateField(Generic[T]):
    """A TrainLoop attribute that reads and writes its :class:`LoopState` (``tl.epoch`` is ``tl.state.epoch``)."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> StateField[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | StateField[T]:
        if obj is None:
            return self
        return getattr(obj.state, self.name)  # type: ignore[attr-defined,no-any-return]

    def __set__(self, obj: object, value: T) -> None:
        setattr(obj.state, self.name, value)  # type: ignore[attr-defined]
