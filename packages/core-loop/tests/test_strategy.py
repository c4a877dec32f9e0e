"""The typed seam: LoopView, Strategy values (single device, DDP, a sharded one of our own) and their resolution."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox.loop import (
    DDP,
    LoopConfigError,
    LoopState,
    LoopView,
    Runtime,
    SingleDevice,
    TrainLoop,
)
from aitoolbox.loop.callbacks import Callback, GradNormClip, GradValueClip
from aitoolbox.loop.testing import HalvesStrategy, TinyClassifier, make_classification_loader


def _loop(**options: Any) -> TrainLoop:
    torch.manual_seed(0)  # the same initial weights in every loop
    model = TinyClassifier()
    loader = make_classification_loader(48, batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainLoop(model, loader, None, None, opt, nn.CrossEntropyLoss(), **options)


def test_a_trainloop_is_a_loop_view_and_callbacks_see_it_typed() -> None:
    seen: list[tuple[int, int, str]] = []

    class Reader(Callback):
        def on_epoch_end(self) -> None:
            tl: LoopView = self.train_loop_obj
            seen.append((tl.epoch, tl.iteration, type(tl.strategy).__name__))

    tl = _loop()
    assert isinstance(tl, LoopView)
    assert isinstance(tl.runtime, Runtime) and isinstance(tl.state, LoopState)
    tl.fit(num_epochs=2, callbacks=[Reader()])
    assert seen == [(0, 6, "SingleDevice"), (1, 12, "SingleDevice")]


def test_an_unregistered_callback_names_itself_instead_of_returning_none() -> None:
    cb = Callback(callback_name="my-logger")
    assert not cb.registered
    with pytest.raises(LoopConfigError, match=r"callback 'my-logger' is not registered .*fit\(callbacks=\[\.\.\.\]\)"):
        _ = cb.train_loop_obj.epoch
    tl = _loop()
    cb.register_train_loop_object(tl)
    assert cb.registered and cb.train_loop_obj is tl


def test_strategy_is_resolved_from_its_name_an_object_or_gpu_mode() -> None:
    assert type(_loop().strategy) is SingleDevice
    assert type(_loop(strategy="single").strategy) is SingleDevice
    ddp = _loop(gpu_mode="ddp", ddp_options={"find_unused_parameters": True})
    assert isinstance(ddp.strategy, DDP) and ddp.strategy.options == {"find_unused_parameters": True}
    assert ddp.ddp_options is ddp.strategy.options  # the original's fit(ddp_model_args=...) updates the strategy's
    named = _loop(strategy="ddp")
    assert isinstance(named.strategy, DDP) and named.gpu_mode == "ddp"  # fit launches the workers, as gpu_mode='ddp'
    given = DDP(broadcast_buffers=False)
    assert _loop(strategy=given).strategy is given


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "fsdp"}, r"strategy must be a Strategy or one of \['ddp', 'single'\], got 'fsdp'"),
        ({"strategy": nn.Linear(1, 1)}, r"strategy must be a Strategy \(e\.g\. DDP\(\)\).*got Linear"),
        ({"strategy": DDP(), "ddp_options": {"x": 1}}, r"pass them to DDP\(\.\.\.\) instead"),
        ({"strategy": "single", "gpu_mode": "ddp"}, r"gpu_mode='ddp' with strategy=SingleDevice\(\): give one of them"),
    ],
)
def test_a_wrong_strategy_is_refused_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(LoopConfigError, match=message):
        _loop(**options)


def test_ddp_options_the_loop_sets_are_refused() -> None:
    with pytest.raises(LoopConfigError, match="must not set device_ids"):
        DDP(device_ids=[0])


def test_single_device_refuses_a_launch_of_several_processes() -> None:
    runtime = Runtime()
    runtime.world_size = 2
    with pytest.raises(LoopConfigError, match=r"strategy='single' in a distributed launch of 2 processes"):
        SingleDevice().check_runtime(runtime)
    DDP().check_runtime(runtime)  # accepted


def test_the_loop_suppresses_sync_and_clips_through_its_strategy() -> None:
    reference = _loop()
    reference.fit(num_epochs=2, grad_accumulation=4, callbacks=[GradNormClip(0.5), GradValueClip(0.1)])
    strategy = HalvesStrategy()
    tl = _loop(strategy=strategy)
    tl.fit(num_epochs=2, grad_accumulation=4, callbacks=[GradNormClip(0.5), GradValueClip(0.1)])
    # 6 batches an epoch, steps after batches 4 and 6: batches 1-3 and 5 of each epoch skip the gradient sync
    assert strategy.sync_off_entered == 2 * 4
    assert strategy.calls == {"clip_grad_norm_": 2 * 2, "clip_grad_value_": 2 * 2}
    for a, b in zip(reference.model.parameters(), tl.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sharded_and_full_state_dicts_round_trip_through_a_strategy() -> None:
    strategy = HalvesStrategy()
    tl = _loop(strategy=strategy)
    tl.fit(num_epochs=1)
    shards = strategy.model_state_dict(tl.model, full=False)
    assert "net.0.weight#0" in shards and "net.0.weight" not in shards
    full = strategy.model_state_dict(tl.model)
    assert full.keys() == tl.model.state_dict().keys()  # eager keys: loadable by a plain model
    fresh = TinyClassifier()
    strategy.load_model_state_dict(fresh, shards, full=False)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, full[k])
