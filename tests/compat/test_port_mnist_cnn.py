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
    train = DataLoader(
        tv.datasets.MNIST("./data", train=False, download=True, transform=norm),
        batch_size=100,
        shuffle=True,
        num_workers=2,
    )
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


class CnnNet(TTModel):
    """The original ``test_end2end_train_loop_cnn_mnist.py``'s model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5, 1), nn.Conv2d(20, 50, 5, 1)
        self.fc1, self.fc2 = nn.Linear(4 * 4 * 50, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.view(-1, 4 * 4 * 50)))), dim=1)

    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        data, target = batch_data
        return criterion(self(data.to(device)), target.to(device))  # type: ignore[no-any-return]

    def get_predictions(self, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        data, y_test = batch_data
        return self(data.to(device)).argmax(dim=1).cpu(), y_test, {"example_target": y_test.tolist()}


def test_e2e_cnn_checkpoint_end_save(torchvision: Any, tmp_path: Path) -> None:
    """Port of ``test_e2e_train_loop/test_end2end_train_loop_cnn_mnist.py``: TrainLoopCheckpointEndSave trains the
    CNN 3 epochs on the (test split of the) digits, the same split as training, validation and test set. The
    original recorded its MNIST numbers; here a hand-written loop is the reference (training loss per epoch, the
    evaluation losses, the predictions), the metadata comes back merged in order, and the saved files (a checkpoint
    per epoch, the final model, the results of both packages) agree with the loop."""
    import json

    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    tv = torchvision
    norm = tv.transforms.Compose([tv.transforms.ToTensor(), tv.transforms.Normalize((0.1307,), (0.3081,))])

    def loader() -> DataLoader[Any]:
        return DataLoader(tv.datasets.MNIST("./data", train=False, download=True, transform=norm), batch_size=100)

    seeded()
    model = CnnNet()
    tl = TrainLoopCheckpointEndSave(
        model,
        loader(),
        loader(),
        loader(),
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        project_name="e2e_train_loop_example",
        experiment_name="TrainLoopCheckpointEndSave_cnn_mnist_example",
        local_model_result_folder_path=tmp_path,
        hyperparams={"batch_size": 100, "num_epochs": 3},
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
        cloud_save_mode=None,
    )
    tl.fit(num_epochs=3)
    assert tl.epoch == 2
    assert sorted(tl.train_history) == ["loss", "val_loss"]

    seeded()
    ref, data = CnnNet(), loader()
    opt = optim.Adam(ref.parameters(), lr=0.001, betas=(0.9, 0.999))
    epoch_losses = []
    for _ in range(3):
        ref.train()
        losses = []
        for x, y in data:
            loss = F.nll_loss(ref(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
    ref.eval()
    with torch.no_grad():
        outs = [(ref(x), y) for x, y in data]
    ref_loss = float(np.mean([F.nll_loss(out, y).item() for out, y in outs]))
    ref_pred = [p for out, _ in outs for p in out.argmax(dim=1).tolist()]
    targets = data.dataset.targets.tolist()  # type: ignore[attr-defined]

    assert tl.train_history["loss"] == pytest.approx(epoch_losses, rel=1e-5)
    assert tl.train_history["val_loss"][-1] == pytest.approx(ref_loss, rel=1e-5)
    for split in ("train", "validation", "test"):  # one dataset: equal losses, as the original's recorded ones
        assert getattr(tl, f"evaluate_loss_on_{split}_set")() == pytest.approx(ref_loss, rel=1e-5)
        pred, target, meta = getattr(tl, f"predict_on_{split}_set")()
        assert pred.tolist() == ref_pred
        assert target.tolist() == targets == meta["example_target"]

    folder = tl.experiment_dir
    assert folder.name.startswith("TrainLoopCheckpointEndSave_cnn_mnist_example_")
    assert sorted(p.name[:10] for p in (folder / "checkpoint_model").glob("ckpt-*")) == [
        f"ckpt-e{e:04d}" for e in range(1, 4)
    ]
    assert (folder / "model" / "model_state_dict.pt").is_file()
    assert json.loads((folder / "hyperparams.json").read_text()) == {"batch_size": 100, "num_epochs": 3}
    accuracy = float(np.mean(np.array(ref_pred) == np.array(targets)))
    assert accuracy > 0.5  # it learned (the original: 0.9847 on MNIST)
    for split in ("test", "validation"):
        assert json.loads((folder / "results" / f"{split}_results.json").read_text())["accuracy"] == accuracy
    saved = json.loads((folder / "results" / "training_history.json").read_text())
    assert saved["loss"] == pytest.approx(tl.train_history["loss"]) and len(saved["val_loss"]) == 3
