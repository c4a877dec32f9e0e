"""aitoolbox.loop: the training-loop engine (TTModel, TrainLoop, callbacks, AMP)."""

from aitoolbox.loop._device import move_to_device, resolve_device
from aitoolbox.loop._version import __version__
from aitoolbox.loop.amp import AmpConfig, resolve_amp
from aitoolbox.loop.direction import resolve_mode
from aitoolbox.loop.errors import (
    LoopConfigError,
    LoopError,
    ModelNotSupportedError,
    NonFiniteLossError,
    ResumeMismatchError,
)
from aitoolbox.loop.history import TrainingHistory
from aitoolbox.loop.model import AbstractModelFeedDefinition, ModelWrap, TTBasicModel, TTModel, as_ttmodel
from aitoolbox.loop.multi_loss import MultiLoss, MultiOptimizer
from aitoolbox.loop.preemption import Preempted, Preemption
from aitoolbox.loop.train_loop import TrainLoop

__all__ = [
    "AbstractModelFeedDefinition",
    "AmpConfig",
    "LoopConfigError",
    "LoopError",
    "ModelNotSupportedError",
    "ModelWrap",
    "MultiLoss",
    "MultiOptimizer",
    "NonFiniteLossError",
    "Preempted",
    "Preemption",
    "ResumeMismatchError",
    "TTBasicModel",
    "TTModel",
    "TrainLoop",
    "TrainingHistory",
    "__version__",
    "as_ttmodel",
    "move_to_device",
    "resolve_amp",
    "resolve_device",
    "resolve_mode",
]
