"""The tracked variants' retention options (the original AIToolbox's), checked, as ``CheckpointManager`` settings."""

from __future__ import annotations

from typing import Any

from aitoolbox.loop import LoopConfigError, resolve_mode
from aitoolbox.loop.errors import check_int
from aitoolbox.loop.history import canonical_metric

__all__ = ["Retention"]


class Retention:
    """The original AIToolbox retention options, checked, as CheckpointManager settings (``manager_options``)."""

    def __init__(self, rm_subopt_local_models: object, num_best_checkpoints_kept: object, mode: object) -> None:
        kept = num_best_checkpoints_kept
        if kept is not None:
            check_int("num_best_checkpoints_kept", kept, 1, expected="a positive int")
        if kept is not None and rm_subopt_local_models is False:
            raise LoopConfigError(
                f"num_best_checkpoints_kept={kept} needs a metric to rank checkpoints by: set "
                "rm_subopt_local_models=True (ranks by 'loss') or to a history metric such as 'val_loss'"
            )
        self.monitor: str | None = None
        self.mode = "min"
        self.manager_options: dict[str, Any] = {"keep_last": None, "keep_best": 0, "monitor": None, "mode": "min"}
        if rm_subopt_local_models is False or rm_subopt_local_models is None:
            return
        if rm_subopt_local_models is not True and not (
            isinstance(rm_subopt_local_models, str) and rm_subopt_local_models
        ):
            raise LoopConfigError(
                f"rm_subopt_local_models must be False, True or a history metric name, got {rm_subopt_local_models!r}"
            )
        if mode not in ("auto", "min", "max"):
            raise LoopConfigError(f"rm_subopt_mode must be 'auto', 'min' or 'max', got {mode!r}")
        # the original's metric names rank by the same metric (``'val_Accuracy'`` is ``'val_accuracy'``)
        self.monitor = "loss" if rm_subopt_local_models is True else canonical_metric(str(rm_subopt_local_models))
        self.mode = resolve_mode(self.monitor, str(mode))  # the rule EarlyStopping(mode='auto') follows too
        self.manager_options = {"keep_last": 1, "keep_best": kept or 2, "monitor": self.monitor, "mode": self.mode}
