"""Stop training at the first NaN or infinite training loss, naming the epoch and iteration."""

from __future__ import annotations

import logging
import math

import torch

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.errors import LoopConfigError, NonFiniteLossError, check_int

__all__ = ["TerminateOnNaN"]

logger = logging.getLogger(__name__)


class TerminateOnNaN(Callback):
    """Stop (or raise) when the training loss becomes NaN or infinite.

    On the CPU every loss is checked at once. On an accelerator the last ``check_every`` losses are kept in a small
    device buffer and checked together, one host sync per ``check_every`` steps, and the report still names the exact
    iteration of the first bad loss.

    Args:
        raise_error: raise :class:`~aitoolbox.loop.errors.NonFiniteLossError` instead of stopping quietly.
        check_every: steps between checks on an accelerator (default 1 on CPU, 50 elsewhere).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=10, callbacks=[TerminateOnNaN()])
            tl.stop_reason  # 'non-finite loss nan in epoch 3 at iteration 1234'
    """

    def __init__(self, raise_error: bool = False, check_every: int | None = None) -> None:
        super().__init__()
        check_int("check_every", check_every, 1, optional=True, expected="a positive int")
        if not isinstance(raise_error, bool):
            raise LoopConfigError(f"raise_error must be True or False, got {raise_error!r}")
        self.raise_error = raise_error
        self.check_every = check_every
        self._k = 1
        self._buf: torch.Tensor | None = None
        self._filled = 0
        self._first_iteration = 0

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_begin(self) -> None:
        tl = self.train_loop_obj
        on_cpu = tl.device.type == "cpu"
        self._k = self.check_every or (1 if on_cpu else 50)
        self._buf = None if self._k == 1 else torch.empty(self._k, dtype=torch.float32, device=tl.device)
        self._filled = 0

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        assert tl.last_loss is not None
        if self._buf is None:
            value = tl.last_loss.item()
            if not math.isfinite(value):
                self._stop(value, tl.iteration - 1)
            return
        if self._filled == 0:
            self._first_iteration = tl.iteration - 1
        self._buf[self._filled] = tl.last_loss.detach()
        self._filled += 1
        if self._filled == self._k:
            self._flush()

    def on_epoch_end(self) -> None:
        if self._buf is not None and self._filled:
            self._flush()

    def _flush(self) -> None:
        assert self._buf is not None
        window = self._buf[: self._filled]
        bad = (~torch.isfinite(window)).nonzero()
        self._filled = 0
        if bad.numel():
            i = int(bad[0, 0])
            self._stop(float(window[i]), self._first_iteration + i)

    def _stop(self, value: float, iteration: int) -> None:
        tl = self.train_loop_obj
        message = f"non-finite loss {value} in epoch {tl.epoch} at iteration {iteration}"
        logger.error("TerminateOnNaN: %s; stopping training", message)
        tl.request_stop(message)
        if self.raise_error:
            raise NonFiniteLossError(message, epoch=tl.epoch, iteration=iteration)
