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
from aitoolbox.loop.model import ModelWrap
from aitoolbox.loop.strategy import Strategy, default_blocks, named_optimizer_state, numbered_optimizer_state
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
        ({"strategy": "fsdp"}, r"strategy must be a Strategy or one of \['ddp', 'fsdp2', 'single'\], got 'fsdp'"),
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


def test_fsdp2_shards_each_block_of_a_stack_by_default() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
            self.act = nn.ReLU()  # no parameters: not a block
            self.head = nn.Linear(4, 2)

    net = Net()
    assert default_blocks(ModelWrap(net)) == [net.embed, *net.layers, net.head]  # through the one-child wrapper
    tiny = TinyClassifier()
    assert default_blocks(tiny) == [tiny.net[0], tiny.net[2]]  # down to the Sequential with two layers
    assert default_blocks(nn.Linear(2, 2)) == []  # one leaf: sharded as the root only


def test_named_optimizer_state_round_trips_to_the_numbered_one() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    tl = TrainLoop(model, make_classification_loader(48, batch_size=8), None, None, opt, nn.CrossEntropyLoss())
    tl.fit(num_epochs=1)
    numbered = opt.state_dict()
    named = named_optimizer_state(tl.model, opt, numbered)
    assert sorted(named["state"]) == sorted(n for n, _ in tl.model.named_parameters())
    assert named["param_groups"][0]["params"] == [n for n, _ in tl.model.named_parameters()]
    back = numbered_optimizer_state(tl.model, opt, named)
    assert back["param_groups"] == numbered["param_groups"]
    assert all(torch.equal(back["state"][i]["exp_avg"], numbered["state"][i]["exp_avg"]) for i in numbered["state"])
    # the base strategy's sharded form is the named one, and loads back
    assert Strategy().optimizer_state_dict(tl.model, opt, full=False).keys() == named.keys()
    Strategy().load_optimizer_state_dict(tl.model, opt, named, full=False)
    with pytest.raises(LoopConfigError, match="not a parameter of the model"):
        named_optimizer_state(nn.Linear(8, 3), opt, numbered)
