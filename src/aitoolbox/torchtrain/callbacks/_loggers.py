"""History loggers: TensorBoard event files and a CSV file, written as training runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aitoolbox.experiment import ExperimentWriter
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback, Every
from aitoolbox.loop.errors import check_int

__all__ = ["CSVHistoryWriter", "TensorBoardLogger"]

logger = logging.getLogger(__name__)


def _experiment_dir(cb: Callback) -> Path | None:
    return getattr(cb.train_loop_obj, "experiment_dir", None)


class TensorBoardLogger(Callback):
    """Log every numeric history metric per epoch, and the training loss every ``log_every_n_steps`` steps.

    Needs the ``tensorboard`` package (``pip install 'aitoolbox[tensorboard]'``). Reading the loss every N steps is one
    host sync per N steps.

    Args:
        log_dir: where the event files go; default ``<experiment folder>/tensorboard`` for the tracked variants.
        log_every_n_steps: steps between training-loss points (0: per-epoch metrics only).
        metrics: the history metrics logged per epoch (default: every numeric one).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=10, callbacks=[TensorBoardLogger(log_dir="runs/tb", log_every_n_steps=50)])
    """

    def __init__(
        self, log_dir: str | Path | None = None, log_every_n_steps: int = 100, metrics: Sequence[str] | None = None
    ) -> None:
        super().__init__(execution_order=900)  # after the metric callbacks
        check_int("log_every_n_steps", log_every_n_steps, 0)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.log_every_n_steps = log_every_n_steps
        self.hook_schedule = Every(log_every_n_steps, "step") if log_every_n_steps else None
        self.metrics = None if metrics is None else list(metrics)
        self.writer: Any = None

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as err:
            raise LoopConfigError(
                "TensorBoardLogger needs the tensorboard package: pip install 'aitoolbox[tensorboard]'"
            ) from err
        if self.log_dir is None and _experiment_dir(self) is None:
            raise LoopConfigError(
                "TensorBoardLogger needs log_dir= with a plain TrainLoop (it has no experiment folder)"
            )

    def on_train_begin(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        exp = _experiment_dir(self)
        log_dir = self.log_dir or (exp / "tensorboard" if exp is not None else None)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_batch_end(self) -> None:  # after every log_every_n_steps-th batch (hook_schedule)
        tl = self.train_loop_obj
        if self.log_every_n_steps and tl.last_loss is not None:
            self.writer.add_scalar("train/loss_step", tl.last_loss.detach().item(), tl.iteration)

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        for name, values in tl.train_history.items():
            if self.metrics is not None and name not in self.metrics:
                continue
            value = values[-1] if values else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{name}", value, tl.epoch + 1)
        self.writer.flush()

    def on_train_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class CSVHistoryWriter(Callback):
    """Rewrite the training history as CSV (and JSON) after every epoch, atomically, so it can be watched live.

    Args:
        directory: where ``training_history.csv``/``.json`` go; default ``<experiment folder>/results``.

    Example:
        .. code-block:: python

            tl.fit(num_epochs=10, callbacks=[CSVHistoryWriter("runs/history")])
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        super().__init__(execution_order=900)
        self.directory = None if directory is None else Path(directory)

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        if self.directory is None and _experiment_dir(self) is None:
            raise LoopConfigError(
                "CSVHistoryWriter needs directory= with a plain TrainLoop (it has no experiment folder)"
            )

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        if self.directory is not None:
            ExperimentWriter(self.directory).write_history(
                tl.train_history, folder=".", epochs=tl.train_history.epochs()
            )
        else:
            exp = _experiment_dir(self)
            assert exp is not None
            ExperimentWriter(exp).write_history(tl.train_history, epochs=tl.train_history.epochs())
