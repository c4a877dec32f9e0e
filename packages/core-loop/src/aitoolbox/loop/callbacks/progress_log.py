"""Progress as log lines, for runs without a terminal: what the bar shows, through ``logging``."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from aitoolbox.loop.callbacks.base import Callback

__all__ = ["ProgressLog", "visible_progress"]

logger = logging.getLogger("aitoolbox.progress")


class ProgressLog(Callback):
    """Log the running epoch's progress every ``every_s`` seconds: ``epoch 3/10: 1200/5000 batches, loss 0.4132,
    212.4 batch/s``. The loop logs each epoch's end (loss, val_loss and the other metrics) itself.

    ``TrainLoop`` adds one automatically when stderr is not a terminal (``progress_bar=None``): under nohup, SLURM,
    Kubernetes or CI a run shows its progress instead of looking hung. The lines go to the ``aitoolbox.progress``
    logger; when the program configured no logging at all, ``fit`` shows the ``aitoolbox`` loggers' INFO lines on
    stderr for its duration (any handler on the root logger or on ``aitoolbox``, e.g. ``logging.basicConfig()``,
    turns that off: your configuration decides).

    Like the bar it costs well under a microsecond per step: the clock is read every few batches and the loss is
    read from the device only when a line is written.

    Args:
        every_s: seconds between two lines inside an epoch.

    Example:
        .. code-block:: python

            tl.fit(num_epochs=10, callbacks=[ProgressLog(every_s=60)])
    """

    stops_mid_epoch = False

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__(execution_order=1_000)
        if isinstance(every_s, bool) or not isinstance(every_s, int | float) or not every_s > 0:
            raise ValueError(f"every_s must be a number of seconds > 0, got {every_s!r}")
        self.every_s = float(every_s)
        self._count = 0
        self._next_check = 1
        self._stride = 1
        self._start = self._last = 0.0

    def provided_metrics(self) -> tuple[str, ...]:
        return ()

    def on_epoch_begin(self) -> None:
        self._count, self._next_check, self._stride = 0, 1, 1
        self._start = self._last = time.monotonic()

    def on_batch_end(self) -> None:
        self._count += 1
        if self._count < self._next_check:
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._stride = max(1, self._stride // 2)
            self._log(now)
        else:
            self._stride = min(self._stride * 2, 1024)
        self._next_check = self._count + self._stride

    def _log(self, now: float) -> None:
        tl = self.train_loop_obj
        epochs = f"/{tl.num_epochs}" if tl.num_epochs else ""
        total = f"/{tl.epoch_length}" if tl.epoch_length else ""
        loss = tl.batch_loss
        shown = f", loss {loss.item():.4f}" if loss is not None else ""
        rate = self._count / max(now - self._start, 1e-9)
        where = f"{tl.batch_in_epoch}{total} batches"
        logger.info("epoch %d%s: %s%s, %.1f batch/s", tl.epoch + 1, epochs, where, shown, rate)


@contextlib.contextmanager
def visible_progress() -> Iterator[None]:
    """For the ``with`` block, show the ``aitoolbox`` loggers' INFO lines on stderr when the program configured no
    logging (no handler on the root logger nor on ``aitoolbox``); otherwise do nothing."""
    package = logging.getLogger("aitoolbox")
    if logging.getLogger().handlers or package.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    level = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())
