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

__all__ = [
    "AbstractCallback",
    "Callback",
    "EarlyStopping",
    "GradNormClip",
    "GradValueClip",
    "LRSchedulerCallback",
    "ProgressBar",
    "TerminateOnNaN",
]
