"""A tqdm progress bar: one line per epoch with the loss and the speed."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from aitoolbox.loop._checks import len_or_none
from aitoolbox.loop.callbacks.base import Callback

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """Show a one-line tqdm bar per epoch with the running loss, and the final ``loss``/``val_loss`` when it ends.

    The running loss is read from the device only when the bar refreshes (every ``refresh_s`` seconds), and the bar
    is touched only every few batches, so the bar costs well under a microsecond per step. ``TrainLoop`` adds one
    automatically when stderr is a terminal (``progress_bar=None``).

    Args:
        refresh_s: seconds between refreshes of the bar.
        file: where to draw the bar (default ``sys.stderr``).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=5, callbacks=[ProgressBar(refresh_s=1.0)])
    """

    stops_mid_epoch = False

    def __init__(self, refresh_s: float = 0.5, file: IO[str] | None = None) -> None:
        super().__init__(execution_order=1_000)  # after metric callbacks, so epoch-end values are complete
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s!r}")
        self.refresh_s = refresh_s
        self.file = file
        self._bar: Any = None
        self._count = 0
        self._shown = 0
        self._next_check = 1
        self._stride = 1
        self._last = 0.0

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_epoch_begin(self) -> None:
        from tqdm.auto import tqdm  # lazy: keeps `import aitoolbox` cheap

        tl = self.train_loop_obj
        total = len_or_none(tl.train_loader)
        epochs = f"/{tl.num_epochs}" if tl.num_epochs else ""
        self._bar = tqdm(
            total=total,
            desc=f"epoch {tl.epoch + 1}{epochs}",
            file=self.file or sys.stderr,
            leave=True,
            dynamic_ncols=True,
            mininterval=self.refresh_s,
            unit="batch",
        )
        self._count = self._shown = 0
        self._next_check = 1
        self._stride = 1
        self._last = time.monotonic()

    def on_batch_end(self) -> None:
        self._count += 1
        if self._count < self._next_check:
            return
        now = time.monotonic()
        elapsed = now - self._last
        if elapsed >= self.refresh_s:
            tl = self.train_loop_obj
            assert tl.last_loss is not None
            self._bar.set_postfix_str(f"loss={tl.last_loss.detach().item():.4f}", refresh=False)
            self._bar.update(self._count - self._shown)
            self._shown = self._count
            self._last = now
            self._stride = max(1, self._stride // 2)
        else:
            self._stride = min(self._stride * 2, 1024)  # look at the clock less often on fast loops
        self._next_check = self._count + self._stride

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        parts = [f"loss={tl.train_history.get_last('loss'):.4f}"]
        for name in tl.train_history:
            if name != "loss":
                value = tl.train_history.get_last(name)
                if isinstance(value, (int, float)):
                    parts.append(f"{name}={value:.4f}")
        self._bar.set_postfix_str(" ".join(parts), refresh=False)
        self._bar.update(self._count - self._shown)
        self._bar.close()
        self._bar = None

    def on_train_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
