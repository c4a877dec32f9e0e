"""Retention: which committed checkpoints a manager keeps."""

from __future__ import annotations

from collections.abc import Sequence

from aitoolbox.checkpointing.errors import CheckpointConfigError
from aitoolbox.checkpointing.layout import CheckpointInfo

__all__ = ["check_retention", "retained"]


def _int(name: str, value: object, minimum: int, expected: str) -> None:
    """The package's one int check: an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointConfigError(f"{name} must be {expected}, got {value!r}")


def check_retention(keep_last: object, keep_best: object, monitor: object, mode: object) -> None:
    if keep_last is not None:
        _int("keep_last", keep_last, 1, "a positive int or None (keep all)")
    _int("keep_best", keep_best, 0, "an int >= 0")
    if keep_best and not monitor:
        raise CheckpointConfigError(
            f"keep_best={keep_best} needs a metric to rank checkpoints by: pass monitor='val_loss' (or another)"
        )
    if mode not in ("min", "max"):
        raise CheckpointConfigError(f"mode must be 'min' or 'max', got {mode!r}")


def retained(
    infos: Sequence[CheckpointInfo], newest: str, keep_last: int | None, keep_best: int, monitor: str | None, mode: str
) -> set[str]:
    """The names to keep: ``newest``, the last ``keep_last`` and the ``keep_best`` best by ``monitor``."""
    keep = {newest}
    if keep_last is not None:
        keep.update(i.name for i in infos[-keep_last:])
    if keep_best:
        ranked = [i for i in infos if monitor in i.metrics]
        ranked.sort(key=lambda i: i.metrics[monitor], reverse=mode == "max")  # type: ignore[index]
        keep.update(i.name for i in ranked[:keep_best])
    return keep
