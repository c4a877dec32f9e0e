"""When a callback's hooks run: :class:`Every` (a schedule is a value, applied by the dispatcher, not ``% every`` in
each callback).

Example:
    >>> every = Every(3, "step")
    >>> [step for step in range(1, 10) if every.due(step)]
    [3, 6, 9]
    >>> first = Every(3, "step", start=1)          # the first one, then every third
    >>> [step for step in range(1, 10) if first.due(step)]
    [1, 4, 7]

.. versionadded:: 0.7
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["Every"]

#: the hooks a unit's schedule filters when none are named
DEFAULT_HOOKS = {"step": ("on_batch_end",), "epoch": ("on_epoch_end",)}


@dataclass(frozen=True)
class Every:
    """Call a callback's hooks only after every ``n``-th training step (batch) or epoch.

    Set it as the callback's ``schedule`` (``cb.schedule = Every(100, "step")``, or a class attribute); the loop then
    calls the scheduled hooks only when due, and the others as always. The count is 1-based: the batches trained
    (``tl.iteration``) after a batch, the complete epochs (``tl.epochs_done``) after an epoch.

    Args:
        n: the period, >= 1.
        unit: ``"step"`` (training batches) or ``"epoch"``.
        start: the first count at which it is due (default ``n``: after the n-th, 2n-th...; ``1``: after the first,
            then every n-th).
        hooks: the hooks it filters (default: ``on_batch_end`` for steps, ``on_epoch_end`` for epochs).

    Example:
        .. code-block:: python

            class LogLoss(Callback):
                schedule = Every(50, "step")

                def on_batch_end(self):
                    logger.info("loss %.4f", self.train_loop_obj.batch_loss.item())
    """

    n: int
    unit: Literal["step", "epoch"] = "step"
    start: int | None = None
    hooks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise LoopConfigError(f"Every(n): n must be an int >= 1, got {self.n!r}")
        if self.unit not in DEFAULT_HOOKS:
            raise LoopConfigError(f"Every(unit=...) must be 'step' or 'epoch', got {self.unit!r}")
        if self.start is not None and (not isinstance(self.start, int) or self.start < 1):
            raise LoopConfigError(f"Every(start=...) must be an int >= 1, got {self.start!r}")

    @property
    def filtered_hooks(self) -> tuple[str, ...]:
        """The hooks this schedule filters."""
        return DEFAULT_HOOKS[self.unit] if self.hooks is None else self.hooks

    def due(self, count: int) -> bool:
        """Whether the hooks run at ``count`` (steps or epochs done, 1-based)."""
        start = self.n if self.start is None else self.start
        return count >= start and (count - start) % self.n == 0
