"""Several losses and optimizers (GAN-style), under the original AIToolbox module path."""

from aitoolbox.loop.multi_loss import MultiLoss, MultiOptimizer

__all__ = ["MultiLoss", "MultiOptimizer"]
