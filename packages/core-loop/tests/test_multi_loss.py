"""MultiLoss / MultiOptimizer: each loss trains its own optimizer's parameters, all backward passes before the steps."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop import LoopConfigError, MultiLoss, MultiOptimizer, TrainLoop, TTModel


class TwoPart(TTModel):
    """``a`` feeds ``b``; loss "a" reaches both parts, loss "b" only ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))

    def losses(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        out = self(x).squeeze(1)
        loss_a = ((out - y) ** 2).mean()
        loss_b = ((self.b(self.a(x).detach()).squeeze(1) + y) ** 2).mean()
        return loss_a, loss_b

    def get_loss(self, batch: Any, criterion: Any, device: Any) -> MultiLoss:
        loss_a, loss_b = self.losses(batch)
        return MultiLoss({"a": loss_a, "b": loss_b})

    def get_predictions(self, batch: Any, device: Any) -> tuple[Any, Any, Any]:
        return self(batch[0]), batch[1], None


def data() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 3, generator=g), torch.randn(8, generator=g)), batch_size=8)


def test_each_loss_steps_only_its_optimizer() -> None:
    torch.manual_seed(0)
    model = TwoPart()
    opt_a, opt_b = torch.optim.SGD(model.a.parameters(), lr=0.1), torch.optim.SGD(model.b.parameters(), lr=0.1)
    loader = data()
    batch = next(iter(loader))
    # the expected update: d(loss_a)/d(a) for a, d(loss_b)/d(b) for b (loss_a's gradient on b is not used)
    loss_a, loss_b = model.losses(batch)
    grads_a = torch.autograd.grad(loss_a, list(model.a.parameters()))
    grads_b = torch.autograd.grad(loss_b, list(model.b.parameters()))
    expected = [
        p.detach() - 0.1 * g
        for p, g in zip([*model.a.parameters(), *model.b.parameters()], [*grads_a, *grads_b], strict=True)
    ]
    total = float((loss_a + loss_b).detach())
    tl = TrainLoop(model, loader, loader, None, MultiOptimizer([opt_a, opt_b]), None)
    seen: list[int] = []

    from aitoolbox.loop.callbacks import Callback

    class Spy(Callback):
        def on_after_gradient_update(self, optimizer_idx: int) -> None:
            seen.append(optimizer_idx)

    tl.fit(num_epochs=1, callbacks=[Spy()])
    for p, want in zip([*model.a.parameters(), *model.b.parameters()], expected, strict=True):
        torch.testing.assert_close(p.detach(), want)
    assert seen == [0, 1]
    assert tl.train_history["loss"] == [pytest.approx(total)]  # the sum of the losses
    assert "val_loss" in tl.train_history  # evaluation sums them too


def test_mapping_and_misuse() -> None:
    model = TwoPart()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class Mapped(TwoPart):
        def get_loss(self, batch: Any, criterion: Any, device: Any) -> MultiLoss:
            loss_a, loss_b = self.losses(batch)
            return MultiLoss({"a": loss_a, "b": loss_b}, loss_optimizer_map={"a": 0, "b": 3})

    mapped = Mapped()
    tl = TrainLoop(mapped, data(), None, None, torch.optim.SGD(mapped.parameters(), lr=0.1), None)
    with pytest.raises(LoopConfigError, match="MultiLoss 'b' trains optimizer 3, but the TrainLoop has 1"):
        tl.fit(num_epochs=1)
    with pytest.raises(LoopConfigError, match="no optimizer index for the losses \\['b'\\]"):
        MultiLoss({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, loss_optimizer_map={"a": 0})
    assert len(MultiOptimizer([opt])) == 1 and MultiOptimizer([opt])[0] is opt
