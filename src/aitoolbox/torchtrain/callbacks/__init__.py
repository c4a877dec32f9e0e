"""TrainLoop callbacks: the base class and the built-in ones."""

from aitoolbox.loop.callbacks import (
    AbstractCallback,
    Callback,
    EarlyStopping,
    GradNormClip,
    GradValueClip,
    LRSchedulerCallback,
    ProgressBar,
    TerminateOnNaN,
)
from aitoolbox.torchtrain.callbacks.loggers import CSVHistoryWriter, TensorBoardLogger
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation

__all__ = [
    "AbstractCallback",
    "CSVHistoryWriter",
    "Callback",
    "EarlyStopping",
    "GradNormClip",
    "GradValueClip",
    "LRSchedulerCallback",
    "ModelPerformanceEvaluation",
    "ProgressBar",
    "TensorBoardLogger",
    "TerminateOnNaN",
]
