"""The loop's cost on a compiled model: ``TrainLoop(compile=...)`` against a hand-written loop over the same kind of
compiled module (``module.compile()``, the same torch.compile options), interleaved in the same run, per epoch.

C1: MLP 32->64->10, batch 64, 500 steps, one thread, inductor (the loop's share is largest on a small model).
On CUDA (when there is one) the same workload also runs on the GPU. Batches are pre-collated in memory."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch
from torch import nn, optim

from aitoolbox.torchtrain.train_loop import TrainLoop

sys.path.insert(0, os.path.dirname(__file__))
from _scale import scaled

STEPS = scaled(500, 10)
OPTIONS: dict[str, Any] = scaled({}, {"backend": "aot_eager"})  # quick (CI): no C compiler run
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


def _batches(device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(64, 32, generator=g).to(device), torch.randint(0, 10, (64,), generator=g).to(device))
        for _ in range(STEPS)
    ]


def hand_written_epoch(model: nn.Module, train: list[Any], opt: optim.Optimizer, crit: nn.Module) -> float:
    model.train()
    running = torch.zeros((), device=train[0][0].device)
    for x, y in train:
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        running += loss.detach()
    return float(running) / len(train)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_trainloop_vs_hand_written_on_a_compiled_model(
    benchmark: Any, interleaved_baseline: Any, device: str
) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = _batches(device)
        ref = _mlp().to(device)
        ref.compile(**OPTIONS)
        ref_opt = optim.SGD(ref.parameters(), lr=0.01)
        crit = nn.CrossEntropyLoss()
        model = _mlp()
        tl = TrainLoop(
            model,
            train,
            None,
            None,
            optim.SGD(model.parameters(), lr=0.01),
            crit,
            device=device,
            progress_bar=False,
            compile=OPTIONS or True,
        )
        benchmark.group = f"compiled ({device})"
        benchmark.extra_info.update(
            workload=f"C1-{device}", candidate="TrainLoop(compile=True)", baseline="hand-written, compiled", steps=STEPS
        )
        setup = interleaved_baseline(benchmark, lambda: hand_written_epoch(ref, train, ref_opt, crit))
        benchmark.pedantic(lambda: tl.fit(num_epochs=1), setup=setup, rounds=scaled(15, 1), warmup_rounds=1)
    finally:
        torch.set_num_threads(previous)
    assert tl.train_history["compiled_graphs"][-1] == 0, "no recompile once warm"
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the same training on both sides
