"""Original AIToolbox module path of the basic callbacks."""

from aitoolbox.loop.callbacks import EarlyStopping, TerminateOnNaN

__all__ = ["EarlyStopping", "TerminateOnNaN"]
