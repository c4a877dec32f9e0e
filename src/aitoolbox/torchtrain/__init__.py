"""aitoolbox.torchtrain: the assembled TrainLoop surface (``train_loop``, ``model``, ``callbacks``)."""

from aitoolbox.torchtrain._version import __version__

__all__ = ["__version__"]
