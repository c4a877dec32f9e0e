"""Per-epoch training history: metric name -> list of values (one per epoch)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ORIGINAL_METRIC_NAMES", "TrainingHistory", "canonical_metric"]

#: The original AIToolbox's metric names and this project's (the result packages' names), for the same quantity.
ORIGINAL_METRIC_NAMES = {
    "Accuracy": "accuracy",
    "ROC_AUC": "roc_auc",
    "PrecisionRecall_AUC": "pr_auc",
    "Mean_squared_error": "mse",
    "Mean_absolute_error": "mae",
}
_SPLITS = ("train_end_train_", "train_end_val_", "train_", "val_", "test_", "")


def canonical_metric(name: str) -> str:
    """This project's history key for a metric named the original AIToolbox's way (``'val_Accuracy'`` ->
    ``'val_accuracy'``); other names unchanged.

    >>> canonical_metric("train_Accuracy"), canonical_metric("val_loss")
    ('train_accuracy', 'val_loss')
    """
    for split in _SPLITS:
        if name.startswith(split) and name[len(split) :] in ORIGINAL_METRIC_NAMES:
            return split + ORIGINAL_METRIC_NAMES[name[len(split) :]]
    return name


class TrainingHistory(Mapping[str, list[Any]]):
    """A read-mostly mapping ``name -> [value_epoch0, value_epoch1, ...]``.

    The loop records ``loss`` (mean training loss of the epoch) and ``val_loss`` (validation loss weighted by batch
    size) at every epoch end; callbacks add their own metrics with :meth:`insert_single_result_into_history`.

    Example:
        >>> h = TrainingHistory()
        >>> h.insert_single_result_into_history("loss", 0.5)
        >>> h["loss"], h.get_last("loss"), "val_loss" in h
        ([0.5], 0.5, False)

    A metric may be read by its original AIToolbox name too: ``h["val_Accuracy"]`` is ``h["val_accuracy"]``.

    Each value also records the epoch it belongs to (:meth:`epochs`): a metric computed every N epochs (``val_loss``
    with ``end_auto_eval=N``) has fewer values than ``loss``, and tables and plots put each in its epoch's row.
    """

    def __init__(self, history: Mapping[str, list[Any]] | None = None) -> None:
        self._history: dict[str, list[Any]] = {k: list(v) for k, v in (history or {}).items()}
        self._epochs: dict[str, list[int]] = {k: list(range(len(v))) for k, v in self._history.items()}
        #: the 0-based epoch that values inserted now belong to (the loop sets it when an epoch begins); ``None``:
        #: each metric's next value is its next epoch
        self.epoch: int | None = None

    def __getitem__(self, name: str) -> list[Any]:
        try:
            return self._history[name]
        except KeyError:
            return self._history[canonical_metric(name)]  # the original's metric names (``'val_Accuracy'``) too

    def __iter__(self) -> Iterator[str]:
        return iter(self._history)

    def __len__(self) -> int:
        return len(self._history)

    def __repr__(self) -> str:
        return f"TrainingHistory({self._history!r})"

    def __str__(self) -> str:
        return str(self._history)

    def __add__(self, other: Mapping[str, Any]) -> TrainingHistory:
        """A copy with one more value per key of ``other`` (``history + {"acc": 0.9}``, the original's)."""
        out = TrainingHistory(self._history)
        out.load_epochs(self._epochs)
        out.epoch = self.epoch
        out += other
        return out

    __radd__ = __add__

    def __iadd__(self, other: Mapping[str, Any]) -> TrainingHistory:
        if not isinstance(other, Mapping):
            raise TypeError(f"a training history adds a dict of {{metric: value}}, not {type(other).__name__}")
        for name, value in other.items():
            self.insert_single_result_into_history(name, value)
        return self

    def insert_single_result_into_history(self, name: str, value: Any) -> None:
        """Append ``value`` to the list of ``name`` (created on first use), in the current :attr:`epoch`."""
        epochs = self._epochs.setdefault(name, [])
        epochs.append(self.epoch if self.epoch is not None else (epochs[-1] + 1 if epochs else 0))
        self._history.setdefault(name, []).append(value)

    def epochs(self) -> dict[str, list[int]]:
        """The 0-based epoch of each value, per metric (a copy).

        >>> h = TrainingHistory()
        >>> for epoch in range(4):
        ...     h.epoch = epoch
        ...     h.insert_single_result_into_history("loss", 1.0 / (epoch + 1))
        ...     if epoch % 2 == 1:
        ...         h.insert_single_result_into_history("val_loss", 0.9 / (epoch + 1))
        >>> h.epochs()
        {'loss': [0, 1, 2, 3], 'val_loss': [1, 3]}
        """
        return {k: list(v) for k, v in self._epochs.items()}

    def load_epochs(self, epochs: Mapping[str, list[int]]) -> None:
        """Restore what :meth:`epochs` returned (for the metrics whose lengths match; the rest stay one per epoch)."""
        for name, values in self._history.items():
            given = epochs.get(name)
            if given is not None and len(given) == len(values):
                self._epochs[name] = [int(e) for e in given]

    def __setitem__(self, name: str, value: Any) -> None:
        """``history[name] = value`` appends, as :meth:`insert_single_result_into_history` (the original's meaning)."""
        self.insert_single_result_into_history(name, value)

    @property
    def train_history(self) -> dict[str, list[Any]]:
        """The history as a plain dict (a copy): the original's attribute of the same name."""
        return self.to_dict()

    def get_train_history(self) -> dict[str, list[Any]]:
        """The history as a plain dict (a copy; the original returned its own dict)."""
        return self.to_dict()

    def get_train_history_dict(self, flatten_dict: bool = False) -> dict[str, list[Any]]:
        """The history as a dict. ``flatten_dict`` has nothing to flatten: every value is a list."""
        return self.to_dict()

    def wrap_pre_prepared_history(self, history: Mapping[str, list[Any]]) -> TrainingHistory:
        """Replace the content with ``history`` (``{name: [values]}``) and return ``self``."""
        self.load_state_dict(history)
        return self

    def get_last(self, name: str, default: Any = None) -> Any:
        """The latest value of ``name``, or ``default`` when it has none."""
        values = self._history.get(name) or self._history.get(canonical_metric(name))
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
        self._epochs = {k: list(range(len(v))) for k, v in self._history.items()}

    @staticmethod
    def is_finite(value: Any) -> bool:
        """True when ``value`` is a finite number."""
        try:
            return math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
