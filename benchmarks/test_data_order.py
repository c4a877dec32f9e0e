"""The data-order log's cost: TrainLoop.fit over an ElasticSampler with the log on (``log_order=True``, the default)
against the same fit with it off, interleaved in the same run, per step. A near-free model (nn.Linear(4, 2)) and the
DataLoader's own collation, so that the log's per-step hashing is as large a share of the step as it can be. The
hashing alone (``DataOrderLog.step``) is timed too, at global batches of 64 and 1024 samples (it hashes 8 bytes a
sample)."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop import DataOrderLog, ElasticSampler, TTModel
from aitoolbox.torchtrain.train_loop import TrainLoop

sys.path.insert(0, os.path.dirname(__file__))
from _scale import scaled

GLOBAL_BATCH = 64
STEPS = scaled(400, 10)


class Linear(TTModel):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def get_loss(self, batch: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch
        return criterion(self.fc(x), y)  # type: ignore[no-any-return]

    def get_predictions(self, batch: Any, device: Any) -> Any:
        return self.fc(batch[0]).argmax(1), batch[1], {}


def _loop(log_order: bool) -> TrainLoop:
    g = torch.Generator().manual_seed(0)
    n = GLOBAL_BATCH * STEPS
    data = TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g))
    loader = DataLoader(data, batch_sampler=ElasticSampler(data, GLOBAL_BATCH, seed=1, log_order=log_order))
    torch.manual_seed(0)
    model = Linear()
    opt = optim.SGD(model.parameters(), lr=0.01)
    return TrainLoop(model, loader, None, None, opt, nn.CrossEntropyLoss(), device="cpu", progress_bar=False)


@pytest.mark.parametrize("workload", ["L0"])
def test_fit_with_the_data_order_log_vs_without(benchmark: Any, interleaved_baseline: Any, workload: str) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        on, off = _loop(True), _loop(False)
        benchmark.group = "data-order log"
        benchmark.extra_info.update(
            workload=workload, candidate="fit, data-order log on", baseline="fit, log off", steps=STEPS
        )
        setup = interleaved_baseline(benchmark, lambda: off.fit(num_epochs=1))
        benchmark.pedantic(lambda: on.fit(num_epochs=1), setup=setup, rounds=scaled(15, 1), warmup_rounds=1)
    finally:
        torch.set_num_threads(previous)
    assert on.state_dict()["data_order"]["steps"] == on.iteration  # the log saw every step
    assert off.state_dict()["data_order"] is None
    for p, q in zip(on.model.parameters(), off.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the same training


@pytest.mark.parametrize("global_batch", [64, 1024])
def test_the_hashing_alone(benchmark: Any, report: Any, global_batch: int) -> None:
    sampler = ElasticSampler(global_batch * 1000, global_batch)
    log, loss = DataOrderLog(), torch.tensor(0.0)
    log.begin_epoch(sampler, 0)

    def epoch() -> None:
        log.step_in_epoch = 0
        for _ in range(sampler.steps):
            log.step(loss)

    benchmark.group = "data-order log"
    benchmark.pedantic(epoch, rounds=scaled(7, 1), warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        per_step = benchmark.stats.stats.min / sampler.steps
        report(
            f"data-order log: DataOrderLog.step, global batch {global_batch}: {per_step * 1e6:.2f} us per step (min)"
        )
