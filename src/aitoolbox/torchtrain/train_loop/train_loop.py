"""The original AIToolbox module path of :class:`TrainLoop` (``aitoolbox.torchtrain.train_loop.train_loop``)."""

from aitoolbox.loop import TrainLoop

__all__ = ["TrainLoop"]
