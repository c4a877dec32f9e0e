"""Original AIToolbox module path of the gradient callbacks."""

from aitoolbox.loop.callbacks import GradNormClip, GradValueClip

__all__ = ["GradNormClip", "GradValueClip"]
