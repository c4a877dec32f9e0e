"""The original's model-saving callbacks. The tracked TrainLoop variants do what they did (see the messages)."""

from __future__ import annotations

from typing import Any

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback

__all__ = ["ModelCheckpoint", "ModelIterationCheckpoint", "ModelTrainEndSave"]


class _UseVariant(Callback):
    replacement = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(
            f"{type(self).__name__} is not a callback here: {self.replacement}. They take the same arguments "
            "(project_name, experiment_name, local_model_result_folder_path, hyperparams, cloud_save_mode, ...) and "
            "write crash-safe checkpoints that fit(resume_from='latest') continues exactly"
        )


class ModelCheckpoint(_UseVariant):
    """Refused: ``TrainLoopCheckpoint`` (checkpoints every epoch)."""

    replacement = "train with TrainLoopCheckpoint (or TrainLoopCheckpointEndSave) instead of TrainLoop"


class ModelIterationCheckpoint(_UseVariant):
    """Refused: ``TrainLoopCheckpoint(iteration_save_freq=N)``."""

    replacement = "train with TrainLoopCheckpoint(..., iteration_save_freq=save_frequency)"


class ModelTrainEndSave(_UseVariant):
    """Refused: ``TrainLoopEndSave`` (final model, results, plots)."""

    replacement = "train with TrainLoopEndSave (or TrainLoopCheckpointEndSave) instead of TrainLoop"
