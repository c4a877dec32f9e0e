"""The original's ``ModelLoadContinueTraining``: here ``fit(resume_from=...)`` continues a run exactly."""

from __future__ import annotations

from typing import Any

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback

__all__ = ["ModelLoadContinueTraining"]


class ModelLoadContinueTraining(Callback):
    """Refused: ``fit(num_epochs=N, resume_from='latest' | <experiment folder> | <checkpoint>)`` (see the message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(
            "ModelLoadContinueTraining is not a callback here: call tl.fit(num_epochs=N, resume_from='latest') on a "
            "TrainLoopCheckpoint variant (or resume_from=<experiment folder or checkpoint folder>); it restores the "
            "model, optimizers, schedulers, GradScaler, RNG and the position inside the epoch"
        )
