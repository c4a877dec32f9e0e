"""The basic callbacks, under the original AIToolbox module path (``aitoolbox.torchtrain.callbacks.basic``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback, EarlyStopping
from aitoolbox.loop.callbacks import TerminateOnNaN as _LossTerminateOnNaN
from aitoolbox.loop.direction import resolve_mode
from aitoolbox.loop.errors import check_int

__all__ = [
    "AllPredictionsSame",
    "DataSubsetTestRun",
    "EarlyStopping",
    "EmailNotification",
    "FunctionOnTrainLoop",
    "ListRegisteredCallbacks",
    "LogUpload",
    "TerminateOnNaN",
    "ThresholdEarlyStopping",
]

logger = logging.getLogger(__name__)


class TerminateOnNaN(_LossTerminateOnNaN):
    """Stop when the training loss (or, with ``monitor``, an epoch-level history metric) is NaN or infinite.

    ``monitor=None`` or ``'loss'`` checks every step's loss (see :class:`aitoolbox.loop.callbacks.TerminateOnNaN`);
    another name checks that history metric at each epoch end (the original AIToolbox's ``monitor=``).
    """

    def __init__(self, monitor: str | None = None, raise_error: bool = False, check_every: int | None = None) -> None:
        super().__init__(raise_error=raise_error, check_every=check_every)
        self.monitor = monitor

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.monitor in (None, "loss"):
            return
        tl = self.train_loop_obj
        value = tl.train_history.get_last(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            tl.request_stop(f"{self.monitor} = {value} at epoch {tl.epoch}")


class ThresholdEarlyStopping(Callback):
    """Stop when ``monitor`` has been on the wrong side of ``threshold`` for more than ``patience`` epochs.

    The right side is below the threshold for names that are minimised (losses, errors), above it for the rest
    (the rule of :func:`~aitoolbox.loop.resolve_mode`; ``mode='min'|'max'`` says it).
    """

    def __init__(self, monitor: str, threshold: float, patience: int = 0, mode: str = "auto") -> None:
        super().__init__("Threshold early stopping", execution_order=99)
        check_int("patience", patience, 0)
        self.monitor, self.threshold, self.patience = monitor, float(threshold), patience
        self.mode = resolve_mode(monitor, mode)
        self.patience_count = patience

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        current = tl.train_history[self.monitor][-1]
        behind = current > self.threshold if self.mode == "min" else current < self.threshold
        self.patience_count = self.patience_count - 1 if behind else self.patience
        if self.patience_count < 0:
            tl.request_stop(f"{self.monitor} did not reach {self.threshold} within {self.patience + 1} epochs")

    def default_state_key(self) -> str:
        return f"{self.callback_name}({self.monitor})"

    def state_dict(self) -> dict[str, Any]:
        return {"patience_count": self.patience_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience_count = int(state["patience_count"])


class AllPredictionsSame(Callback):
    """At each epoch end, report (and with ``stop_training`` stop) when every validation prediction equals ``value``."""

    def __init__(self, value: float = 0.0, stop_training: bool = False, verbose: bool = True) -> None:
        super().__init__("All predictions have the same value")
        self.value, self.stop_training, self.verbose = value, stop_training, verbose

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        predictions, _, _ = tl.predict_on_validation_set()
        if all(el == self.value for el in predictions.reshape(-1).tolist()):
            if self.verbose:
                logger.warning("all the predicted values are %s", self.value)
            if self.stop_training:
                tl.request_stop(f"all predictions are {self.value}")


class ListRegisteredCallbacks(Callback):
    """Log the registered callbacks per hook, in the order they run, when training starts."""

    def on_train_begin(self) -> None:
        for hook, callbacks in self.train_loop_obj.callbacks_by_hook.items():
            if callbacks:
                logger.info("%s: %s", hook, ", ".join(cb.callback_name for cb in callbacks))


class FunctionOnTrainLoop(Callback):
    """Call ``fn_to_execute(train_loop)`` at the chosen points (``epoch_end=True``, ``batch_end=True``...)."""

    def __init__(
        self,
        fn_to_execute: Callable[[Any], Any],
        tl_registration: bool = False,
        epoch_begin: bool = False,
        epoch_end: bool = False,
        train_begin: bool = False,
        train_end: bool = False,
        batch_begin: bool = False,
        batch_end: bool = False,
        after_gradient_update: bool = False,
        after_optimizer_step: bool = False,
        execution_order: int = 0,
        device_idx_execution: int | None = None,
    ) -> None:
        super().__init__("Execute given function as a callback", execution_order, device_idx_execution)
        if not callable(fn_to_execute):
            raise LoopConfigError(f"fn_to_execute must be a function of the train loop, got {fn_to_execute!r}")
        self.fn_to_execute = fn_to_execute
        self.when = {
            "on_train_loop_registration": tl_registration,
            "on_epoch_begin": epoch_begin,
            "on_epoch_end": epoch_end,
            "on_train_begin": train_begin,
            "on_train_end": train_end,
            "on_batch_begin": batch_begin,
            "on_batch_end": batch_end,
            "on_after_gradient_update": after_gradient_update,
            "on_after_optimizer_step": after_optimizer_step,
        }
        if not any(self.when.values()):
            raise LoopConfigError("FunctionOnTrainLoop runs nowhere: set one of epoch_end=True, train_end=True, ...")

    def _run(self, hook: str) -> None:
        if self.when[hook]:
            self.fn_to_execute(self.train_loop_obj)

    def on_train_loop_registration(self) -> None:
        self._run("on_train_loop_registration")

    def on_epoch_begin(self) -> None:
        self._run("on_epoch_begin")

    def on_epoch_end(self) -> None:
        self._run("on_epoch_end")

    def on_train_begin(self) -> None:
        self._run("on_train_begin")

    def on_train_end(self) -> None:
        self._run("on_train_end")

    def on_batch_begin(self) -> None:
        self._run("on_batch_begin")

    def on_batch_end(self) -> None:
        self._run("on_batch_end")

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        self._run("on_after_gradient_update")

    def on_after_optimizer_step(self) -> None:
        self._run("on_after_optimizer_step")


class DataSubsetTestRun(Callback):
    """Train (and evaluate) on the first few batches only: a quick run while developing a model."""

    def __init__(self, num_train_batches: int = 1, num_val_batches: int = 0, num_test_batches: int = 0) -> None:
        super().__init__("Run model on a small subset of the training dataset")
        for name, value in (
            ("num_train_batches", num_train_batches),
            ("num_val_batches", num_val_batches),
            ("num_test_batches", num_test_batches),
        ):
            check_int(name, value, 1 if name == "num_train_batches" else 0)
        self.num_train_batches, self.num_val_batches = num_train_batches, num_val_batches
        self.num_test_batches = num_test_batches

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        for count, name in ((self.num_val_batches, "validation_loader"), (self.num_test_batches, "test_loader")):
            if count > 0 and getattr(tl, name) is None:
                raise LoopConfigError(f"DataSubsetTestRun subsets {name}, which the TrainLoop was not given")

    def on_train_begin(self) -> None:
        tl = self.train_loop_obj
        for count, name in (
            (self.num_train_batches, "train_loader"),
            (self.num_val_batches, "validation_loader"),
            (self.num_test_batches, "test_loader"),
        ):
            if count > 0:
                setattr(tl, name, self.subset_data_loader(getattr(tl, name), count))

    @staticmethod
    def subset_data_loader(data_loader: Any, num_batches: int) -> list[Any]:
        subset = []
        for i, batch in enumerate(data_loader):
            if i == num_batches:
                break
            subset.append(batch)
        return subset


class EmailNotification(Callback):
    """Not provided: the original sent e-mail through AWS SES (see the message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(
            "EmailNotification (AWS SES e-mail) is not part of this project; to be told when training ends, add a "
            "FunctionOnTrainLoop(notify, train_end=True) callback with your own notify(train_loop)"
        )


class LogUpload(Callback):
    """Not provided: the tracked variants upload the experiment folder (see the message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(
            "LogUpload is not needed: with cloud_save_mode='s3' the tracked TrainLoop variants upload the whole "
            "experiment folder; write your log file into tl.experiment_dir to have it uploaded"
        )
