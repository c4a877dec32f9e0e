"""The original AIToolbox's TensorBoard callbacks, on :class:`~aitoolbox.torchtrain.callbacks.TensorBoardLogger`.

Event files go to ``log_dir``, else ``<experiment folder>/tensorboard`` (a tracked variant's, or
``<local_model_result_folder_path>/<project_name>/<experiment_name>/tensorboard`` from the arguments). Needs the
``tensorboard`` package (``pip install 'aitoolbox[tensorboard]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aitoolbox.loop import LoopConfigError
from aitoolbox.torchtrain.callbacks._loggers import TensorBoardLogger

__all__ = ["TensorboardFullTracking", "TensorboardTrainBatchLoss", "TensorboardTrainHistoryMetric"]


class TensorboardFullTracking(TensorBoardLogger):
    """The history metrics (``metric_names``, default all numeric) at every epoch end and the training loss every
    ``batch_log_frequency`` steps (one host sync per logged step; 0: none)."""

    def __init__(
        self,
        metric_names: Sequence[str] | None = None,
        batch_log_frequency: int = 1,
        log_dir: str | Path | None = None,
        is_project: bool = True,
        project_name: str | None = None,
        experiment_name: str | None = None,
        local_model_result_folder_path: str | Path | None = None,
        cloud_save_mode: str | None = None,
        bucket_name: str | None = None,
        cloud_dir_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        if log_dir is None and project_name and experiment_name and local_model_result_folder_path:
            log_dir = Path(local_model_result_folder_path).expanduser() / project_name / experiment_name / "tensorboard"
        if kwargs:
            raise LoopConfigError(f"unknown arguments {sorted(kwargs)}")
        super().__init__(log_dir=log_dir, log_every_n_steps=batch_log_frequency, metrics=metric_names)
        self.metric_names = self.metrics


class TensorboardTrainHistoryMetric(TensorboardFullTracking):
    """The history metrics at every epoch end only."""

    def __init__(self, metric_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(metric_names, batch_log_frequency=0, **kwargs)


class TensorboardTrainBatchLoss(TensorboardFullTracking):
    """The training loss every ``batch_log_frequency`` steps only."""

    def __init__(self, batch_log_frequency: int = 1, **kwargs: Any) -> None:
        super().__init__([], batch_log_frequency=batch_log_frequency, **kwargs)
