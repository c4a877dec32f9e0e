"""On CUDA: TrainLoop.fit against hand-written loops, with batches in pinned host memory (so every step copies).

W2g: MLP 256->512->512->10, batch 256, 300 steps, validation pass per epoch. Two baselines, each interleaved:
``item per step`` records the loss with ``loss.item()`` every step (what most hand-written loops do: one host sync
per step); ``no sync`` accumulates the loss on the device like TrainLoop does.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn, optim

from aitoolbox.torchtrain.train_loop import TrainLoop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DIMS, BATCH, STEPS, VAL_STEPS, ROUNDS = [256, 512, 512, 10], 256, 300, 20, 9


def _mlp() -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(DIMS):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(BATCH, DIMS[0], generator=g).pin_memory(),
            torch.randint(0, 10, (BATCH,), generator=g).pin_memory(),
        )
        for _ in range(n)
    ]


def _hand_written(sync_per_step: bool, model: nn.Module, train: list[Any], val: list[Any], opt: Any) -> float:
    dev = torch.device("cuda")
    crit = nn.CrossEntropyLoss()
    model.train()
    running: Any = 0.0 if sync_per_step else torch.zeros((), device=dev)
    for x, y in train:
        loss = crit(model(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sync_per_step:
            running += loss.item()
        else:
            running += loss.detach()
    model.eval()
    total = torch.zeros((), device=dev)
    with torch.no_grad():
        for x, y in val:
            total += crit(model(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True)) * len(y)
    result = float(running) + total.item()
    torch.cuda.synchronize()
    return result


@pytest.mark.parametrize("prefetch", [True, False], ids=["side-stream", "no-prefetch"])
@pytest.mark.parametrize("baseline", ["item per step", "no sync"])
def test_trainloop_fit_vs_hand_written_cuda(
    benchmark: Any, interleaved_baseline: Any, baseline: str, prefetch: bool
) -> None:
    train, val = _batches(STEPS, 0), _batches(VAL_STEPS, 1)
    torch.manual_seed(0)
    ref = _mlp().cuda()
    ref_opt = optim.Adam(ref.parameters(), lr=1e-3)
    torch.manual_seed(0)
    model = _mlp()
    tl = TrainLoop(
        model,
        train,
        val,
        None,
        optim.Adam(model.parameters(), lr=1e-3),
        nn.CrossEntropyLoss(),
        device="cuda",
        prefetch=prefetch,
    )

    def run_tl() -> None:
        tl.fit(num_epochs=1)
        torch.cuda.synchronize()

    benchmark.group = "W2g"
    benchmark.extra_info.update(
        workload="W2g",
        candidate=f"TrainLoop.fit ({'side stream' if prefetch else 'no prefetch'})",
        baseline=f"hand-written, {baseline}",
        steps=STEPS,
    )
    setup = interleaved_baseline(
        benchmark, lambda: _hand_written(baseline == "item per step", ref, train, val, ref_opt)
    )
    benchmark.pedantic(run_tl, setup=setup, rounds=ROUNDS, warmup_rounds=1)
