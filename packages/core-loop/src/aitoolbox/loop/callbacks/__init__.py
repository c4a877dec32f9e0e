"""TrainLoop callbacks: the base class and the built-in ones."""

from aitoolbox.loop.callbacks.base import AbstractCallback, Callback
from aitoolbox.loop.callbacks.early_stopping import EarlyStopping
from aitoolbox.loop.callbacks.gradient import GradNormClip, GradValueClip
from aitoolbox.loop.callbacks.lr_scheduler import LRSchedulerCallback
from aitoolbox.loop.callbacks.progress_bar import ProgressBar
from aitoolbox.loop.callbacks.progress_log import ProgressLog
from aitoolbox.loop.callbacks.schedule import Every
from aitoolbox.loop.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "AbstractCallback",
    "Callback",
    "EarlyStopping",
    "Every",
    "GradNormClip",
    "GradValueClip",
    "LRSchedulerCallback",
    "ProgressBar",
    "ProgressLog",
    "TerminateOnNaN",
]
