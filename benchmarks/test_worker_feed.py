"""Worker-fed training through TrainLoop, as users run it: ``fast_collate=True`` (the loop derives
``fastcollate.slot_loader`` from the DataLoader) against ``fast_collate=False`` (the stock worker path), on the same
``DataLoader(num_workers=2)`` of a64 samples (float32 [3, 224, 224], int; batches of 64, 38.5 MB) and a near-free
model, so the loop is bound by its loader.

Rows: 10, 60 and 200 batches per epoch, workers persistent or not. A timed round is one ``fit`` of several epochs
(about 120 batches: 6 x 10, 2 x 60, 1 x 200), so each epoch's start (new workers without ``persistent_workers``) is
measured as users pay it; each fast round is preceded by a stock round (interleaved). Both loops train the same
model from the same start on the same batches and must end with equal weights.

``test_loop_path_beside_direct_path`` puts the loop's path beside what a user could write by hand over the same
``slot_loader``: the ratio is what TrainLoop itself adds per batch on the slot path.
"""

from __future__ import annotations

import pathlib
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.torchtrain.train_loop import TrainLoop

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import Cycled, samples
from _scale import scaled

WORKERS = 2
EPOCHS = {10: 6, 60: 2, 200: 1}  # epochs per timed round: about 120 batches each


class _NearFree(nn.Module):
    """Reads a few values of every sample (as any model touches its input) and trains one weight per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0] * self.w


class _Loss(nn.Module):
    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.sum(1) - y).square().mean() * 1e-6


def _loader(batches: int, persistent: bool) -> DataLoader[Any]:
    items = samples("a64")
    data = Cycled(items, scaled(batches, 2) * len(items))
    return DataLoader(data, batch_size=len(items), num_workers=WORKERS, persistent_workers=persistent)


def _trainloop(loader: DataLoader[Any], fast: bool) -> TrainLoop:
    model = _NearFree()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    return TrainLoop(model, loader, None, None, opt, _Loss(), device="cpu", fast_collate=fast)


class _Fits:
    """One fit of ``epochs`` epochs per call, counting batches and wall time."""

    def __init__(self, tl: TrainLoop, epochs: int) -> None:
        self.tl, self.epochs = tl, epochs
        self.batches, self.wall = 0, 0.0

    def __call__(self) -> None:
        start = time.perf_counter()
        done = self.tl.state.iteration
        self.tl.fit(num_epochs=self.epochs)  # after the first fit: this many more epochs
        self.wall += time.perf_counter() - start
        self.batches += self.tl.state.iteration - done


def _stop_workers(*users: TrainLoop | DataLoader[Any]) -> None:
    """Shuts persistent workers down now: freed later by the cyclic collector (a TrainLoop holds reference cycles),
    torch's iterator finds its index queues already closed and waits 5 s per worker before terminating it."""
    for user in users:
        loader = user.loaders.train(user.train_loader) if isinstance(user, TrainLoop) else user
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()


def _ratio_line(label: str, cand: _Fits | _HandWritten, base: _Fits | _HandWritten) -> str:
    c, b = cand.batches / cand.wall, base.batches / base.wall
    return f"{label}: {c / b:.2f}x batches/s ({c:.1f} vs {b:.1f})"


def _quiet(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()

    return run


@pytest.mark.parametrize("persistent", [False, True], ids=["non-persistent", "persistent"])
@pytest.mark.parametrize("batches", sorted(EPOCHS))
def test_trainloop_fast_collate_vs_stock_workers(
    benchmark: Any, interleaved_baseline: Any, report: Any, batches: int, persistent: bool
) -> None:
    epochs = scaled(EPOCHS[batches], 1)
    torch.manual_seed(0)
    stock = _Fits(_trainloop(_loader(batches, persistent), fast=False), epochs)
    torch.manual_seed(0)
    fast = _Fits(_trainloop(_loader(batches, persistent), fast=True), epochs)
    workers = "persistent" if persistent else "non-persistent"
    benchmark.group = f"TrainLoop a64 w{WORKERS} {batches} batches/epoch {workers}"
    benchmark.extra_info.update(
        workload=f"a64 {batches}b {workers[:5]}",
        candidate=f"TrainLoop fast_collate ({epochs} ep)",
        baseline="TrainLoop stock workers",
        steps=batches * epochs,
    )
    setup = interleaved_baseline(benchmark, _quiet(stock))
    benchmark.pedantic(_quiet(fast), setup=setup, rounds=scaled(3, 1), warmup_rounds=scaled(1, 0))
    _stop_workers(stock.tl, fast.tl)
    for a, b in zip(fast.tl.model.parameters(), stock.tl.model.parameters(), strict=True):
        assert torch.equal(a, b), "the two loops trained on different batches"
    assert fast.batches == stock.batches > 0
    label = f"a64 w{WORKERS} {batches:>3} batches/epoch {workers:>14}, TrainLoop fast vs stock"
    report(_ratio_line(label, fast, stock))


class _HandWritten:
    """What a user writes over ``fastcollate.slot_loader`` for the same work: forward, loss, backward, step."""

    def __init__(self, loader: DataLoader[Any], epochs: int) -> None:
        import fastcollate

        self.loader, self.epochs = fastcollate.slot_loader(loader), epochs
        self.model, self.crit = _NearFree(), _Loss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.batches, self.wall, self.loss = 0, 0.0, 0.0

    def __call__(self) -> None:
        start = time.perf_counter()
        for _ in range(self.epochs):
            for x, y in self.loader:
                loss = self.crit(self.model(x), y)
                loss.backward()
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.loss += loss.item()
                self.batches += 1
        self.loader.release_slots()  # as the loop does at the end of a fit
        self.wall += time.perf_counter() - start


@pytest.mark.parametrize("persistent", [False, True], ids=["non-persistent", "persistent"])
def test_loop_path_beside_direct_path(benchmark: Any, interleaved_baseline: Any, report: Any, persistent: bool) -> None:
    batches, epochs = 60, scaled(EPOCHS[60], 1)
    torch.manual_seed(0)
    hand = _HandWritten(_loader(batches, persistent), epochs)
    torch.manual_seed(0)
    loop = _Fits(_trainloop(_loader(batches, persistent), fast=True), epochs)
    workers = "persistent" if persistent else "non-persistent"
    benchmark.group = f"slot path a64 w{WORKERS} {batches} batches/epoch {workers}"
    benchmark.extra_info.update(
        workload=f"a64 {batches}b {workers[:5]}",
        candidate=f"TrainLoop fast_collate ({epochs} ep)",
        baseline="hand-written, slot_loader",
        steps=batches * epochs,
    )
    setup = interleaved_baseline(benchmark, _quiet(hand))
    benchmark.pedantic(_quiet(loop), setup=setup, rounds=scaled(3, 1), warmup_rounds=scaled(1, 0))
    _stop_workers(hand.loader, loop.tl)
    for a, b in zip(loop.tl.model.parameters(), hand.model.parameters(), strict=True):
        assert torch.equal(a, b), "the two loops trained on different batches"
    label = f"a64 w{WORKERS}  60 batches/epoch {workers:>14}, TrainLoop vs hand-written slot path"
    report(_ratio_line(label, loop, hand))
