"""Scheduler callbacks wrapping ``torch.optim.lr_scheduler`` classes (the original AIToolbox module path).

Each builds its scheduler when the loop registers it, on the loop's optimizer (or ``optimizer_idx``-th of several),
and steps it at every epoch end; the warmup schedules (:mod:`aitoolbox.torchtrain.schedulers.warmup`) step after
every optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import lr_scheduler

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import LRSchedulerCallback

__all__ = [
    "AbstractScheduler",
    "GeneralLRSchedulerCallback",
    "LambdaLRScheduler",
    "MultiStepLRScheduler",
    "ReduceLROnPlateauMetricScheduler",
    "ReduceLROnPlateauScheduler",
    "StepLRScheduler",
]

#: the original's marker class of scheduler callbacks; here every scheduler callback is an ``LRSchedulerCallback``
AbstractScheduler = LRSchedulerCallback


class GeneralLRSchedulerCallback(LRSchedulerCallback):
    """``scheduler_class(optimizer, **kwargs)`` built at registration and stepped at every epoch end.

    Args:
        scheduler_class: a ``torch.optim.lr_scheduler`` class (or any ``(optimizer, **kwargs) -> scheduler``).
        optimizer_idx: with several optimizers, the index (or the optimizer itself) the schedule drives.
        **kwargs: the scheduler's arguments.
    """

    def __init__(
        self,
        scheduler_class: Callable[..., Any],
        optimizer_idx: int | torch.optim.Optimizer | None = None,
        *,
        step_every: str = "epoch",
        monitor: str = "val_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(self._build, step_every=step_every, monitor=monitor)
        self.callback_name = type(self).__name__
        self.scheduler_class, self.optimizer_idx, self.scheduler_args = scheduler_class, optimizer_idx, kwargs

    def _build(self, first: torch.optim.Optimizer) -> Any:
        optimizers = self.train_loop_obj.optimizers
        idx = self.optimizer_idx
        if idx is None:
            optimizer = first
        elif isinstance(idx, int) and not isinstance(idx, bool):
            if not 0 <= idx < len(optimizers):
                raise LoopConfigError(f"optimizer_idx={idx}, but the TrainLoop has {len(optimizers)} optimizer(s)")
            optimizer = optimizers[idx]
        elif isinstance(idx, torch.optim.Optimizer):
            optimizer = idx
        else:
            raise LoopConfigError(f"optimizer_idx must be an index or an optimizer, got {idx!r}")
        return self.scheduler_class(optimizer, **self.scheduler_args)


class ReduceLROnPlateauScheduler(GeneralLRSchedulerCallback):
    """``ReduceLROnPlateau`` on the validation loss (its value of the epoch, from the history)."""

    def __init__(self, main_multi_loss: str | None = None, **kwargs: Any) -> None:
        if main_multi_loss is not None:
            raise LoopConfigError("main_multi_loss applies to MultiLoss training; monitor the loss with metric_name=")
        super().__init__(lr_scheduler.ReduceLROnPlateau, monitor="val_loss", **kwargs)


class ReduceLROnPlateauMetricScheduler(GeneralLRSchedulerCallback):
    """``ReduceLROnPlateau`` on ``metric_name`` from the history (e.g. ``'val_accuracy'``, with ``mode='max'``)."""

    def __init__(self, metric_name: str, **kwargs: Any) -> None:
        super().__init__(lr_scheduler.ReduceLROnPlateau, monitor=metric_name, **kwargs)
        self.metric_name = metric_name


class LambdaLRScheduler(GeneralLRSchedulerCallback):
    """``LambdaLR(optimizer, lr_lambda)``, stepped at epoch ends and/or after every optimizer step."""

    def __init__(
        self,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        execute_epoch_end: bool = True,
        execute_batch_end: bool = False,
        **kwargs: Any,
    ) -> None:
        if not execute_epoch_end and not execute_batch_end:
            raise LoopConfigError("set execute_epoch_end=True or execute_batch_end=True: otherwise it never steps")
        super().__init__(lr_scheduler.LambdaLR, lr_lambda=lr_lambda, **kwargs)
        self.execute_epoch_end, self.execute_batch_end = execute_epoch_end, execute_batch_end

    def on_epoch_end(self) -> None:
        if self.execute_epoch_end:
            self.scheduler.step()

    def on_after_optimizer_step(self) -> None:
        if self.execute_batch_end:
            self.scheduler.step()


class StepLRScheduler(GeneralLRSchedulerCallback):
    """``StepLR``: the learning rate times ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size: int, **kwargs: Any) -> None:
        super().__init__(lr_scheduler.StepLR, step_size=step_size, **kwargs)


class MultiStepLRScheduler(GeneralLRSchedulerCallback):
    """``MultiStepLR``: the learning rate times ``gamma`` at each epoch of ``milestones_list``."""

    def __init__(self, milestones_list: Sequence[int], **kwargs: Any) -> None:
        super().__init__(lr_scheduler.MultiStepLR, milestones=list(milestones_list), **kwargs)
