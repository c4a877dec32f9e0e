"""Port of the original AIToolbox 1.8 ``test_train_loop_pytorch_compare/test_rand_generated_data_ff_net.py``:
the TrainLoop against a hand-written PyTorch loop on the same data, model initialisation and optimizer, by epochs,
by iterations, with gradient accumulation and with a warmup schedule. Predictions must be equal, losses equal up to
float rounding (here the loss is a float64 sum weighted by batch size; the batches are equally sized)."""

from __future__ import annotations

import random
from typing import Any

import _hand_ddp  # tests/ (on sys.path through tests/conftest.py): the hand-written DDP reference and its FFNet
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _hand_ddp import FFNet
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.torchtrain.model import TTModel
from aitoolbox.torchtrain.schedulers.warmup import LinearWithWarmupScheduler
from aitoolbox.torchtrain.train_loop import TrainLoop


class FFNetAIToolbox(FFNet, TTModel):
    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch_data
        return criterion(self(x.to(device)), y.to(device))  # type: ignore[no-any-return]

    def get_predictions(self, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch_data
        return self(x.to(device)).argmax(dim=1).cpu(), y, {}


def seeded() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def loaders(batch_size: int) -> list[DataLoader[Any]]:
    sizes = (1000, 300, 300)
    return [
        DataLoader(TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))), batch_size=batch_size) for n in sizes
    ]


def evaluate(model: nn.Module, loader: DataLoader[Any]) -> tuple[list[int], float]:
    model.eval()
    preds, losses = [], []
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            losses.append(F.nll_loss(out, y).item())
            preds += out.argmax(dim=1).tolist()
    return preds, float(np.mean(losses))


def assert_predicts_like(tl: TrainLoop, model_pt: nn.Module, data: list[DataLoader[Any]]) -> None:
    """The loop's predictions and losses on the three sets equal the reference model's."""
    for loader, predict, loss_of in zip(
        data,
        (tl.predict_on_train_set, tl.predict_on_validation_set, tl.predict_on_test_set),
        (tl.evaluate_loss_on_train_set, tl.evaluate_loss_on_validation_set, tl.evaluate_loss_on_test_set),
        strict=True,
    ):
        preds_pt, loss_pt = evaluate(model_pt, loader)
        assert predict()[0].tolist() == preds_pt
        assert loss_of() == pytest.approx(loss_pt, rel=1e-6)


@pytest.mark.parametrize("mode", ["epochs", "iterations", "grad_accumulation", "warmup_schedule"])
def test_trainloop_equals_core_pytorch(mode: str) -> None:
    batch_size = 50 if mode in ("epochs", "warmup_schedule") else 10
    accum = 5 if mode == "grad_accumulation" else 1
    epochs = 10
    seeded()
    model_aitb = FFNetAIToolbox()
    opt_aitb = optim.Adam(model_aitb.parameters(), lr=0.001, betas=(0.9, 0.999))
    seeded()
    model_pt = FFNet()
    opt_pt = optim.Adam(model_pt.parameters(), lr=0.001, betas=(0.9, 0.999))
    data = loaders(batch_size)
    steps = len(data[0]) * epochs
    warmup = 5

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(steps - step) / float(max(1, steps - warmup)))

    tl = TrainLoop(model_aitb, *data, opt_aitb, nn.NLLLoss())
    callbacks = [LinearWithWarmupScheduler(num_warmup_steps=warmup, num_training_steps=steps)]
    if mode == "iterations":
        tl.fit(num_iterations=steps)
        assert tl.total_iteration_idx == steps - 1
    else:
        tl.fit(num_epochs=epochs, grad_accumulation=accum, callbacks=callbacks if mode == "warmup_schedule" else None)

    scheduler = optim.lr_scheduler.LambdaLR(opt_pt, lr_lambda) if mode == "warmup_schedule" else None
    model_pt.train()
    for _ in range(epochs):
        for i, (x, y) in enumerate(data[0]):
            loss = F.nll_loss(model_pt(x), y) / accum
            loss.backward()
            if (i + 1) % accum == 0:
                opt_pt.step()
                opt_pt.zero_grad()
                if scheduler is not None:
                    scheduler.step()

    assert_predicts_like(tl, model_pt, data)


@pytest.mark.slow
def test_ddp_cpu_trainloop_equals_core_pytorch_ddp(tmp_path: Any) -> None:
    """Port of ``TestDDPCPUTrainLoopVSCorePyTorch``: ``gpu_mode='ddp'`` with the original's ``fit(backend='gloo',
    num_gpus=2, on_gpu=False)`` against a hand-written DDP loop in 2 gloo processes. The original forced a shuffling
    ``DistributedSampler``; this loop keeps the user's order (the loaders here are not shuffled), so the reference
    shards with ``shuffle=False``. The trained weights must be equal, and so the predictions and losses on the whole
    sets (the original concatenated each rank's share)."""
    import socket

    import torch.multiprocessing as mp

    seeded()
    model_aitb = FFNetAIToolbox()
    seeded()
    model_pt = FFNet()
    data = loaders(50)
    tl = TrainLoop(
        model_aitb,
        *data,
        optim.Adam(model_aitb.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        gpu_mode="ddp",
    )
    tl.fit(num_epochs=10, backend="gloo", num_gpus=2, on_gpu=False)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "pt_ddp.pt"
    mp.spawn(_hand_ddp.train, args=(2, port, model_pt.state_dict(), data[0].dataset, 50, 10, str(out)), nprocs=2)
    model_pt.load_state_dict(torch.load(out, weights_only=True))

    trained = tl.model.state_dict()
    for name, value in model_pt.state_dict().items():
        assert torch.equal(trained[name], value), name
    assert_predicts_like(tl, model_pt, data)
