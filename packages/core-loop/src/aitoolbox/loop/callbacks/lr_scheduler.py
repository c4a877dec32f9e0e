"""Drive any ``torch.optim.lr_scheduler`` from the loop: per epoch, per optimizer step, or on a history metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.errors import LoopConfigError

__all__ = ["LRSchedulerCallback"]

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class LRSchedulerCallback(Callback):
    """Step a learning-rate scheduler at every epoch end or after every optimizer step.

    ``ReduceLROnPlateau`` is stepped at epoch end with the last value of ``monitor`` from the training history.

    Args:
        scheduler: a scheduler instance, or a function ``optimizer -> scheduler`` called at registration with the
            TrainLoop's (first) optimizer.
        step_every: ``'epoch'`` or ``'iteration'`` (after every optimizer step).
        monitor: the history metric fed to ``ReduceLROnPlateau``.

    Example:
        .. code-block:: python

            sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10 * len(train_loader))
            tl.fit(num_epochs=10, callbacks=[LRSchedulerCallback(sched, step_every="iteration")])

            plateau = LRSchedulerCallback(
                lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2), monitor="val_loss"
            )
    """

    stops_mid_epoch = False

    def __init__(
        self,
        scheduler: Any | SchedulerFactory,
        *,
        step_every: str = "epoch",
        monitor: str = "val_loss",
    ) -> None:
        super().__init__()
        if step_every not in ("epoch", "iteration"):
            raise LoopConfigError(f"step_every must be 'epoch' or 'iteration', got {step_every!r}")
        self._factory: SchedulerFactory | None = None
        self.scheduler: Any = None
        if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            self.scheduler = scheduler
        elif callable(scheduler):
            self._factory = scheduler
        else:
            raise LoopConfigError(
                f"scheduler must be a torch.optim.lr_scheduler instance or a function optimizer -> scheduler, "
                f"got {type(scheduler).__name__}"
            )
        self.step_every = step_every
        self.monitor = monitor
        self._plateau = False

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        if self.scheduler is None:
            assert self._factory is not None
            self.scheduler = self._factory(tl.optimizers[0])
            if not hasattr(self.scheduler, "step"):
                raise LoopConfigError(
                    f"the scheduler factory returned {type(self.scheduler).__name__}, not a scheduler"
                )
        scheduled = getattr(self.scheduler, "optimizer", None)
        if scheduled is not None and all(scheduled is not opt for opt in tl.optimizers):
            raise LoopConfigError(
                f"the {type(self.scheduler).__name__} was built on another optimizer than this TrainLoop's, so it "
                "would change that one's learning rate and leave training's alone; build it on the optimizer given "
                "to the TrainLoop, or pass a function: LRSchedulerCallback(lambda opt: StepLR(opt, ...))"
            )
        self._plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self._plateau and self.step_every != "epoch":
            raise LoopConfigError("ReduceLROnPlateau steps on an epoch metric; use step_every='epoch'")
        if self._plateau and self.monitor == "val_loss" and tl.validation_loader is None:
            raise LoopConfigError(
                "ReduceLROnPlateau monitors 'val_loss' but the TrainLoop has no validation_loader; pass one or set "
                "monitor='loss'"
            )

    def on_after_optimizer_step(self) -> None:
        if self.step_every == "iteration":
            self.scheduler.step()

    def on_epoch_end(self) -> None:
        if self.step_every != "epoch":
            return
        if self._plateau:
            tl = self.train_loop_obj
            if self.monitor not in tl.train_history:
                raise LoopConfigError(
                    f"ReduceLROnPlateau monitors {self.monitor!r}, which is not in the training history "
                    f"(it has {sorted(tl.train_history)})"
                )
            self.scheduler.step(tl.train_history.get_last(self.monitor))
        else:
            self.scheduler.step()

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def default_state_key(self) -> str:
        """``LRSchedulerCallback(StepLR, optimizer 0)``: the scheduler's class and the optimizer it schedules."""
        tl, scheduled = self.train_loop_obj, getattr(self.scheduler, "optimizer", None)
        index = next((i for i, opt in enumerate(tl.optimizers) if opt is scheduled), 0) if tl is not None else 0
        return f"{self.callback_name}({type(self.scheduler).__name__}, optimizer {index})"

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
