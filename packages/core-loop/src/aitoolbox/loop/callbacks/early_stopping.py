"""Stop training when a monitored history metric stops improving."""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from aitoolbox.loop.callbacks.base import Callback, check_metric_will_exist
from aitoolbox.loop.direction import resolve_mode
from aitoolbox.loop.errors import LoopConfigError, check_int

__all__ = ["EarlyStopping"]

logger = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a training-history metric, e.g. ``'val_loss'`` or ``'val_accuracy'``.
        min_delta: the smallest change that counts as an improvement.
        patience: how many epochs without improvement to accept before stopping.
        mode: ``'min'``, ``'max'``, or ``'auto'``: :func:`~aitoolbox.loop.direction.resolve_mode`'s rule, the one
            checkpoint ranking uses too (minimise names with loss/error/mse/mae/rmse/perplexity..., maximise the
            rest). The direction is logged when training starts.
        restore_best_weights: at the end of training, load the model weights of the best epoch.

    Example:
        .. code-block:: python

            tl.fit(num_epochs=100, callbacks=[EarlyStopping(monitor="val_loss", patience=3)])

    .. versionchanged:: 0.2
        ``mode='auto'`` follows :func:`~aitoolbox.loop.direction.resolve_mode` (``val_bleu``, ``val_iou`` are
        maximised); a metric no callback produces is refused before epoch 1.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        super().__init__()
        check_int("patience", patience, 0)
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise LoopConfigError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.patience = patience
        if not isinstance(monitor, str) or not monitor:
            raise LoopConfigError(f"monitor must be a training-history metric name such as 'val_loss', got {monitor!r}")
        self.mode = resolve_mode(monitor, mode)
        self._mode_given = mode
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: dict[str, Any] | None = None

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        if self.monitor == "val_loss" and tl.validation_loader is None:
            raise LoopConfigError(
                "EarlyStopping monitors 'val_loss' but the TrainLoop has no validation_loader; pass one, or "
                "monitor another metric such as 'loss'"
            )

    def on_train_begin(self) -> None:
        tl = self.train_loop_obj
        check_metric_will_exist(tl, self.monitor, "EarlyStopping monitors")
        if tl.is_main_process:
            logger.info(
                "EarlyStopping: %s is %s (mode=%r%s)",
                self.monitor,
                "minimised" if self.mode == "min" else "maximised",
                self._mode_given,
                "; pass mode='min' or 'max' to choose" if self._mode_given == "auto" else "",
            )

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        if self.monitor not in tl.train_history:
            raise LoopConfigError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the training history "
                f"(it has {sorted(tl.train_history)}); add the callback that records it or change monitor"
            )
        value = float(tl.train_history.get_last(self.monitor))
        if math.isfinite(value) and self._improved(value):
            self.best, self.best_epoch, self.wait = value, tl.epoch, 0
            if self.restore_best_weights:
                state = tl.strategy.model_state_dict(tl.model)
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = tl.epoch
            tl.request_stop(
                f"EarlyStopping: {self.monitor} did not improve for {self.wait} epochs "
                f"(best {self.best} at epoch {self.best_epoch})"
            )
            logger.info("%s", tl.stop_reason)

    def on_train_end(self) -> None:
        tl = self.train_loop_obj
        if self.restore_best_weights and self._best_state is not None and self.best_epoch != tl.epoch:
            tl.strategy.load_model_state_dict(tl.model, self._best_state)
            logger.info(
                "EarlyStopping: restored the weights of epoch %s (%s=%s)", self.best_epoch, self.monitor, self.best
            )

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def default_state_key(self) -> str:
        return f"{self.callback_name}({self.monitor})"

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best_state": copy.copy(self._best_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        self._best_state = state.get("best_state")
