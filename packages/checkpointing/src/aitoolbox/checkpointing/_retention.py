"""Retention: which committed checkpoints a manager keeps."""

from __future__ import annotations

from collections.abc import Sequence

from aitoolbox.checkpointing.errors import CheckpointConfigError
from aitoolbox.checkpointing.layout import CheckpointInfo

__all__ = ["check_retention", "retained"]


def check_retention(keep_last: object, keep_best: object, monitor: object, mode: object) -> None:
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise CheckpointConfigError(f"keep_last must be a positive int or None (keep all), got {keep_last!r}")
    if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 0:
        raise CheckpointConfigError(f"keep_best must be an int >= 0, got {keep_best!r}")
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
