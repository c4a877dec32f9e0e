"""Warmup schedules (the Hugging Face ``get_*_schedule_with_warmup`` shapes), stepped after every optimizer step."""

from __future__ import annotations

import math
from typing import Any

from aitoolbox.torchtrain.schedulers.basic import LambdaLRScheduler

__all__ = [
    "ConstantWithWarmupScheduler",
    "CosineWithWarmupScheduler",
    "HardRestartsCosineWithWarmupScheduler",
    "LinearWithWarmupScheduler",
]


def _warm(step: int, warmup: int) -> float:
    return float(step) / float(max(1, warmup))


def _progress(step: int, warmup: int, total: int) -> float:
    """The share of the post-warmup steps done (0 at the end of the warmup, 1 at ``total``)."""
    return float(step - warmup) / float(max(1, total - warmup))


class ConstantWithWarmupScheduler(LambdaLRScheduler):
    """Linear warmup from 0 over ``num_warmup_steps`` optimizer steps, then the optimizer's learning rate."""

    def __init__(self, num_warmup_steps: int, last_epoch: int = -1, **kwargs: Any) -> None:
        def lr_lambda(step: int) -> float:
            return _warm(step, num_warmup_steps) if step < num_warmup_steps else 1.0

        super().__init__(lr_lambda, execute_epoch_end=False, execute_batch_end=True, last_epoch=last_epoch, **kwargs)


class LinearWithWarmupScheduler(LambdaLRScheduler):
    """Linear warmup, then linear decay to 0 at ``num_training_steps`` (``tl.get_num_training_steps()``)."""

    def __init__(self, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1, **kwargs: Any) -> None:
        def lr_lambda(step: int) -> float:
            if step < num_warmup_steps:
                return _warm(step, num_warmup_steps)
            return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))

        super().__init__(lr_lambda, execute_epoch_end=False, execute_batch_end=True, last_epoch=last_epoch, **kwargs)


class CosineWithWarmupScheduler(LambdaLRScheduler):
    """Linear warmup, then a cosine decay to 0 over ``num_cycles`` periods (0.5: half a cosine)."""

    def __init__(
        self,
        num_warmup_steps: int,
        num_training_steps: int,
        num_cycles: float = 0.5,
        last_epoch: int = -1,
        **kwargs: Any,
    ) -> None:
        def lr_lambda(step: int) -> float:
            if step < num_warmup_steps:
                return _warm(step, num_warmup_steps)
            progress = _progress(step, num_warmup_steps, num_training_steps)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

        super().__init__(lr_lambda, execute_epoch_end=False, execute_batch_end=True, last_epoch=last_epoch, **kwargs)


class HardRestartsCosineWithWarmupScheduler(LambdaLRScheduler):
    """Linear warmup, then ``num_cycles`` cosine decays to 0, each restarting from the full learning rate."""

    def __init__(
        self,
        num_warmup_steps: int,
        num_training_steps: int,
        num_cycles: float = 0.5,
        last_epoch: int = -1,
        **kwargs: Any,
    ) -> None:
        def lr_lambda(step: int) -> float:
            if step < num_warmup_steps:
                return _warm(step, num_warmup_steps)
            progress = _progress(step, num_warmup_steps, num_training_steps)
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))

        super().__init__(lr_lambda, execute_epoch_end=False, execute_batch_end=True, last_epoch=last_epoch, **kwargs)
