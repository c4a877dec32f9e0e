"""The original AIToolbox's TrainLoop methods that are not evaluation: a base class of :class:`TrainLoop`."""

from __future__ import annotations

from typing import Any

from aitoolbox.loop.callbacks.lr_scheduler import LRSchedulerCallback

__all__ = ["CallableBool", "OriginalLoopAPI"]


class CallableBool(int):
    """A bool that may also be called: ``tl.is_main_process`` and the original's ``tl.is_main_process()``."""

    def __call__(self) -> bool:
        return bool(self)

    def __repr__(self) -> str:
        return repr(bool(self))


class OriginalLoopAPI:
    """History, scheduler and step-count helpers of the original AIToolbox ``TrainLoop``."""

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        """``tl(num_epochs=...)`` is ``tl.fit(num_epochs=...)`` (the original's spelling)."""
        return self.fit(*args, **kwargs)

    def insert_metric_result_into_history(self: Any, metric_name: str, metric_result: Any) -> None:
        """Append ``metric_result`` to the history of ``metric_name`` (created on first use)."""
        self.train_history.insert_single_result_into_history(metric_name, metric_result)

    def get_schedulers(self: Any) -> list[LRSchedulerCallback]:
        """The learning-rate scheduler callbacks of the current (or last) ``fit``."""
        return [cb for cb in self.callbacks if isinstance(cb, LRSchedulerCallback)]

    def get_num_training_steps(self: Any) -> int:
        """The optimizer steps the current ``fit`` makes: ``num_iterations // grad_accumulation``, or
        ``len(train_loader) // grad_accumulation * num_epochs`` (for warmup schedules' ``num_training_steps``)."""
        if self.num_iterations:
            return int(self.num_iterations // self.grad_accumulation)
        return int(len(self.train_loader) // self.grad_accumulation * self.num_epochs)
