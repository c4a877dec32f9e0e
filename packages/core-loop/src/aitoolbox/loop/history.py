"""Per-epoch training history: metric name -> list of values (one per epoch)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["TrainingHistory"]


class TrainingHistory(Mapping[str, list[Any]]):
    """A read-mostly mapping ``name -> [value_epoch0, value_epoch1, ...]``.

    The loop records ``loss`` (mean training loss of the epoch) and ``val_loss`` (validation loss weighted by batch
    size) at every epoch end; callbacks add their own metrics with :meth:`insert_single_result_into_history`.

    Example:
        >>> h = TrainingHistory()
        >>> h.insert_single_result_into_history("loss", 0.5)
        >>> h["loss"], h.get_last("loss"), "val_loss" in h
        ([0.5], 0.5, False)
    """

    def __init__(self, history: Mapping[str, list[Any]] | None = None) -> None:
        self._history: dict[str, list[Any]] = {k: list(v) for k, v in (history or {}).items()}

    def __getitem__(self, name: str) -> list[Any]:
        return self._history[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._history)

    def __len__(self) -> int:
        return len(self._history)

    def __repr__(self) -> str:
        return f"TrainingHistory({self._history!r})"

    def insert_single_result_into_history(self, name: str, value: Any) -> None:
        """Append ``value`` to the list of ``name`` (created on first use)."""
        self._history.setdefault(name, []).append(value)

    def get_last(self, name: str, default: Any = None) -> Any:
        """The latest value of ``name``, or ``default`` when it has none."""
        values = self._history.get(name)
        return values[-1] if values else default

    def last_numbers(self) -> dict[str, float]:
        """The last value of every metric whose last value is a number (not a bool)."""
        return {
            name: float(values[-1])
            for name, values in self._history.items()
            if values and isinstance(values[-1], int | float) and not isinstance(values[-1], bool)
        }

    def to_dict(self) -> dict[str, list[Any]]:
        """A deep-enough copy as plain ``dict`` of ``list``."""
        return {k: list(v) for k, v in self._history.items()}

    def state_dict(self) -> dict[str, list[Any]]:
        return self.to_dict()

    def load_state_dict(self, state: Mapping[str, list[Any]]) -> None:
        self._history = {k: list(v) for k, v in state.items()}

    @staticmethod
    def is_finite(value: Any) -> bool:
        """True when ``value`` is a finite number."""
        try:
            return math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
