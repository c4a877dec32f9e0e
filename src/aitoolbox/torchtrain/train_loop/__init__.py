"""The TrainLoop variants. ``from aitoolbox.torchtrain.train_loop import *`` gives every variant available."""

from aitoolbox.loop import TrainLoop
from aitoolbox.torchtrain._composition import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave

__all__ = ["TrainLoop", "TrainLoopCheckpoint", "TrainLoopCheckpointEndSave", "TrainLoopEndSave"]
