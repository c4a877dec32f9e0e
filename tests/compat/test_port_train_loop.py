"""Port of the original AIToolbox 1.8 ``test_train_loop/test_train_loop.py`` checks that hold public behaviour: the
hook order and counts seen by a callback overriding every hook and by one overriding some, the returned model and
final epoch, and the concatenation of predictions and metadata over batches (for a TTModel and a feed definition).
The original drove dummies (list loaders, a counting optimizer) through its private callbacks handler; here a real
TrainLoop trains a real model."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aitoolbox.torchtrain.callbacks.abstract import AbstractCallback
from aitoolbox.torchtrain.data.batch_model_feed_defs import AbstractModelFeedDefinition
from aitoolbox.torchtrain.model import ModelWrap, TTModel
from aitoolbox.torchtrain.train_loop import TrainLoop

HOOKS = [
    "on_train_loop_registration",
    "on_train_begin",
    "on_epoch_begin",
    "on_batch_begin",
    "on_after_gradient_update",
    "on_after_optimizer_step",
    "on_batch_end",
    "on_epoch_end",
    "on_train_end",
]


class Tracker(AbstractCallback):
    def __init__(self) -> None:
        super().__init__("tracker")
        self.calls: list[str] = []


def tracker_class(hooks: list[str]) -> type[Tracker]:
    """A Tracker subclass that overrides exactly ``hooks`` (the loop calls only what a class overrides)."""

    def method(hook: str) -> Any:
        def record(self: Tracker, *_: Any) -> None:
            self.calls.append(hook)

        return record

    return type("Tracked", (Tracker,), {h: method(h) for h in hooks})


class BatchIndex(Dataset[tuple[torch.Tensor, int]]):
    """Batch ``b`` (1-based, 64 samples each) holds the value ``b``: predictions are checkable per batch."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return 64 * self.batches

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(i // 64 + 1)]), i // 64 + 1


class Net(TTModel):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + self.w

    def get_loss(self, batch: Any, criterion: Any, device: Any) -> torch.Tensor:
        return (self(batch[0]) - 1).pow(2).mean()

    def get_predictions(self, batch: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch
        return x.squeeze(1).long() + 100, y, {"bla": (x.squeeze(1).long() + 200).tolist()}


class Feed(AbstractModelFeedDefinition):
    def get_loss(self, model: nn.Module, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        return (model(batch_data[0]) - 1).pow(2).mean()

    def get_predictions(self, model: nn.Module, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch_data
        return x.squeeze(1).long() + 100, y, {"bla": (x.squeeze(1).long() + 200).tolist()}


def loop(wrapped: bool) -> tuple[TrainLoop, nn.Module]:
    loaders = [DataLoader(BatchIndex(n), batch_size=64) for n in (4, 3, 2)]
    net = Net()
    model: nn.Module = ModelWrap(net, Feed()) if wrapped else net
    return TrainLoop(model, *loaders, torch.optim.SGD(net.parameters(), lr=0.1), None), model


@pytest.mark.parametrize("wrapped", [False, True], ids=["ttmodel", "feed_definition"])
def test_callback_on_execution(wrapped: bool) -> None:
    tl, model = loop(wrapped)
    short_hooks = [
        "on_epoch_begin",
        "on_batch_begin",
        "on_after_gradient_update",
        "on_after_optimizer_step",
        "on_epoch_end",
        "on_train_end",
    ]
    full, short = tracker_class(HOOKS)(), tracker_class(short_hooks)()
    returned = tl.fit(
        num_epochs=2, callbacks=[AbstractCallback("callback_test1"), full, short, AbstractCallback("callback_test2")]
    )
    assert returned is model and not tl.early_stop and tl.epoch == 1
    batch = ["on_batch_begin", "on_after_gradient_update", "on_after_optimizer_step", "on_batch_end"]
    epoch = ["on_epoch_begin", *batch * 4, "on_epoch_end"]
    assert full.calls == ["on_train_loop_registration", "on_train_begin", *epoch * 2, "on_train_end"]
    assert Counter(full.calls) == {
        "on_train_loop_registration": 1,
        "on_train_begin": 1,
        "on_epoch_begin": 2,
        "on_epoch_end": 2,
        "on_train_end": 1,
        "on_batch_begin": 8,
        "on_batch_end": 8,
        "on_after_gradient_update": 8,
        "on_after_optimizer_step": 8,
    }
    assert short.calls == [h for h in full.calls if h in short_hooks]


@pytest.mark.parametrize("wrapped", [False, True], ids=["ttmodel", "feed_definition"])
@pytest.mark.parametrize(("split", "batches"), [("train", 4), ("validation", 3), ("test", 2)])
def test_predictions_concatenated_over_batches(wrapped: bool, split: str, batches: int) -> None:
    tl, _ = loop(wrapped)
    tl.fit(num_epochs=2)
    y_pred, y_test, metadata = getattr(tl, f"predict_on_{split}_set")()
    assert y_test.tolist() == [b for b in range(1, batches + 1) for _ in range(64)]
    assert y_pred.tolist() == [b + 100 for b in range(1, batches + 1) for _ in range(64)]
    assert metadata == {"bla": [b + 200 for b in range(1, batches + 1) for _ in range(64)]}
