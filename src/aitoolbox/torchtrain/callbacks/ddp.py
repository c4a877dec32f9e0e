"""The original AIToolbox's distributed-training callbacks (``aitoolbox.torchtrain.callbacks.ddp``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aitoolbox.loop.callbacks import Callback

__all__ = ["DistributedSamplerSetEpoch", "InMultiProcessDataLoad"]


class DistributedSamplerSetEpoch(Callback):
    """``set_epoch(epoch)`` on the given ``DistributedSampler``\\ s at every epoch start.

    The loop already does it for the samplers it shards the training data with; this is for samplers of your own.
    """

    def __init__(self, train_sampler: Any, validation_sampler: Any, test_sampler: Any) -> None:
        super().__init__("set_epoch for DistributedSamplers at the start of each epoch", execution_order=-100)
        self.train_sampler, self.validation_sampler, self.test_sampler = train_sampler, validation_sampler, test_sampler

    def on_epoch_begin(self) -> None:
        for sampler in (self.train_sampler, self.validation_sampler, self.test_sampler):
            if sampler is not None:
                sampler.set_epoch(self.train_loop_obj.epoch)


Build = Callable[[], Any] | bool | None


class InMultiProcessDataLoad(Callback):
    """Build the loaders inside each process of a distributed run (``on_multiprocess_start``), e.g. to read the data
    there instead of in the launching process; a loader whose function is ``None`` or ``False`` is kept."""

    def __init__(
        self, train_loader_build_fn: Build = None, val_loader_build_fn: Build = None, test_loader_build_fn: Build = None
    ) -> None:
        super().__init__("Multiprocess in-process data loading logic infuser")
        self.train_loader_build_fn = train_loader_build_fn
        self.val_loader_build_fn = val_loader_build_fn
        self.test_loader_build_fn = test_loader_build_fn

    def on_multiprocess_start(self) -> None:
        tl = self.train_loop_obj
        for build, name in (
            (self.train_loader_build_fn, "train_loader"),
            (self.val_loader_build_fn, "validation_loader"),
            (self.test_loader_build_fn, "test_loader"),
        ):
            if callable(build):
                setattr(tl, name, build())
