"""Original AIToolbox module path of the callback base class."""

from aitoolbox.loop.callbacks import AbstractCallback, Callback

__all__ = ["AbstractCallback", "Callback"]
