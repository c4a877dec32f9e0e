"""The TrainLoop variants. ``from aitoolbox.torchtrain.train_loop import *`` gives every variant available."""

from aitoolbox.loop import TrainLoop

__all__ = ["TrainLoop"]
