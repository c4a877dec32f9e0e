"""Ports of the original AIToolbox 1.8 ``test_data/test_dataset.py`` and ``test_mutli_loss_optim.py``: the same
checks on real tensors and optimizers (the original used counting dummies)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.torchtrain.data.dataset import ListDataset
from aitoolbox.torchtrain.multi_loss_optim import MultiLoss, MultiOptimizer


@pytest.mark.parametrize("batch_size", [5, 10, 20, 50, 100])
def test_list_dataset_return_format(batch_size: int) -> None:
    rng = random.Random(batch_size)
    feats = [
        [[i + j for j in range(start, start + rng.randint(0, span))] for i in range(100)]
        for start, span in ((10, 20), (100, 100), (1000, 200))
    ]
    loader = DataLoader(ListDataset(*feats), batch_size=batch_size, collate_fn=lambda b: list(zip(*b, strict=True)))
    for i, batch in enumerate(loader):
        for feat, got in zip(feats, batch, strict=True):
            assert feat[i * batch_size : (i + 1) * batch_size] == list(got)


def losses(value: float = 1.0) -> list[torch.Tensor]:
    w = torch.tensor(value, requires_grad=True)
    return [w * 1.0, w * 2.0, w * 3.0]


def test_multi_loss_optimizer_map() -> None:
    a, b, c = losses()
    assert MultiLoss({"loss1": a, "loss2": b, "loss3": c}, {"loss1": 0, "loss2": 2, "loss3": 1}).optimizer_loss_map == {
        0: "loss1",
        2: "loss2",
        1: "loss3",
    }
    assert MultiLoss({"loss1": a, "loss2": b, "loss3": c}).optimizer_loss_map == {0: "loss1", 1: "loss2", 2: "loss3"}


def test_multi_loss_backward_and_retain_graph() -> None:
    w = torch.tensor(1.0, requires_grad=True)
    shared = w * 2.0  # one graph under all three losses: only retain_graph lets a second backward run
    multi = MultiLoss({"loss1": shared * 1.0, "loss2": shared * 2.0, "loss3": shared * 3.0})
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for idx in range(3):
        multi.backward(idx, 0, scaler)
        assert multi.loss_backward_remaining == 2 - idx
    assert w.grad is not None and float(w.grad) == 2.0 * (1 + 2 + 3)
    without = MultiLoss({"a": (w * 2.0) * 1.0, "b": (w * 2.0) * 2.0}, retain_graph_until_last=False)
    without.backward(0)  # independent graphs: no retain needed
    without.backward(1)


def test_multi_loss_item_and_division() -> None:
    a, b, c = losses(10.0)
    multi = MultiLoss({"loss1": a, "loss2": b, "loss3": c})
    assert multi.item() == {"loss1": 10.0, "loss2": 20.0, "loss3": 30.0}
    assert (multi / 10.0).item() == {"loss1": 1.0, "loss2": 2.0, "loss3": 3.0}


def test_multi_optimizer_step_zero_grad_and_state() -> None:
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(3)]
    opts = [torch.optim.SGD([p], lr=0.5, momentum=0.9) for p in params]
    multi = MultiOptimizer(opts)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(3):
        for j, p in enumerate(params):
            multi.zero_grad(j, 0)
            (p.sum() * (j + 1)).backward()
            multi.step(j, 0, scaler)
    for j, p in enumerate(params):
        assert p.grad is not None and torch.equal(p.grad, torch.full((2,), float(j + 1)))
        assert not torch.equal(p.detach(), torch.ones(2))  # stepped
    states = multi.state_dict()
    assert len(states) == 3 and all("momentum_buffer" in s["state"][0] for s in states)
    fresh = MultiOptimizer([torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.5, momentum=0.9) for _ in range(3)])
    fresh.load_state_dict(states)
    assert fresh.state_dict() == states
    with pytest.raises(Exception, match="expected a list of 3 optimizer states"):
        fresh.load_state_dict(states[:2])
