"""aitoolbox.loop: the training-loop engine (TTModel, TrainLoop, callbacks, AMP)."""

from aitoolbox.loop._device import move_to_device, resolve_device
from aitoolbox.loop._version import __version__
from aitoolbox.loop.amp import AmpConfig, resolve_amp
from aitoolbox.loop.callbacks.base import CallableBool, LoopView
from aitoolbox.loop.direction import resolve_mode
from aitoolbox.loop.elastic import DataOrderLog, ElasticSampler
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
from aitoolbox.loop.runtime import Runtime
from aitoolbox.loop.state import LoopState
from aitoolbox.loop.strategy import DDP, FSDP2, SingleDevice, Strategy
from aitoolbox.loop.train_loop import TrainLoop

__all__ = [
    "DDP",
    "FSDP2",
    "AbstractModelFeedDefinition",
    "AmpConfig",
    "CallableBool",
    "DataOrderLog",
    "ElasticSampler",
    "LoopConfigError",
    "LoopError",
    "LoopState",
    "LoopView",
    "ModelNotSupportedError",
    "ModelWrap",
    "MultiLoss",
    "MultiOptimizer",
    "NonFiniteLossError",
    "Preempted",
    "Preemption",
    "ResumeMismatchError",
    "Runtime",
    "SingleDevice",
    "Strategy",
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
