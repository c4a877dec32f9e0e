"""The original AIToolbox module path of the tracked variants (``...train_loop.train_loop_tracking``)."""

from aitoolbox.torchtrain._composition import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave

__all__ = ["TrainLoopCheckpoint", "TrainLoopCheckpointEndSave", "TrainLoopEndSave"]
