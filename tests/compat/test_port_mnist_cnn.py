"""Port of the original AIToolbox 1.8 ``test_train_loop_pytorch_compare/test_mnist_cnn.py``: a CNN with dropout,
trained on a shuffled loader with 2 worker processes, gives the same validation loss and predictions through the
TrainLoop as through a hand-written PyTorch loop (the loop draws nothing from the random streams the user's code
uses). MNIST is the digits stand-in of ``standin/torchvision``."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader

from aitoolbox import TrainLoop, TTModel


@pytest.fixture
def torchvision() -> Iterator[Any]:
    standin = str(Path(__file__).parent / "standin")
    sys.path.insert(0, standin)
    try:
        import torchvision

        yield torchvision
    finally:
        sys.path.remove(standin)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]


class CNNNet(TTModel):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout2d(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
        return F.log_softmax(self.fc2(x), dim=1)

    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        data, target = batch_data
        return criterion(self(data.to(device)), target.to(device))  # type: ignore[no-any-return]

    def get_predictions(self, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        data, y_test = batch_data
        return self(data.to(device)).argmax(dim=1).cpu(), y_test, {}


def seeded() -> None:
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)


def setup(tv: Any) -> tuple[DataLoader[Any], DataLoader[Any], CNNNet, optim.Optimizer]:
    norm = tv.transforms.Compose([tv.transforms.ToTensor(), tv.transforms.Normalize((0.1307,), (0.3081,))])
    seeded()
    train = DataLoader(tv.datasets.MNIST("./data", train=False, download=True, transform=norm), batch_size=100,
                       shuffle=True, num_workers=2)  # fmt: skip
    val = DataLoader(tv.datasets.MNIST("./data", train=False, transform=norm), batch_size=100, num_workers=2)
    seeded()
    model = CNNNet()
    return train, val, model, optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))


def test_trainloop_core_pytorch_compare(torchvision: Any) -> None:
    train, val, model, opt = setup(torchvision)
    tl = TrainLoop(model, train, val, None, opt, nn.NLLLoss())  # fastcollate, when installed, collates the same
    tl.fit(num_epochs=5)
    loss_tl = tl.evaluate_loss_on_validation_set(force_prediction=True)
    y_pred_tl, y_true_tl, _ = tl.predict_on_validation_set(force_prediction=True)

    train, val, model, opt = setup(torchvision)
    model.train()
    for _ in range(5):
        for x, y in train:
            F.nll_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    preds, trues, losses = [], [], []
    with torch.no_grad():
        for x, y in val:
            out = model(x)
            losses.append(F.nll_loss(out, y).item())
            preds += out.argmax(dim=1).tolist()
            trues += y.tolist()
    assert y_pred_tl.tolist() == preds and y_true_tl.tolist() == trues
    assert loss_tl == pytest.approx(float(np.mean(losses)), rel=1e-6)
