"""Worker-fed loaders: ``fastcollate.slot_loader`` against the stock ``DataLoader(num_workers=2, pin_memory=True)``
with ``default_collate`` on the same Dataset, whole loader (collation in the workers, hand-over, the main process).

Each candidate epoch is preceded by one stock epoch (interleaved); both loaders keep their workers
(``persistent_workers``), so an epoch is the steady state. Reported: batches/s and the main process's CPU time per
batch (``time.process_time``: every thread of the main process; the workers are other processes), as ratios. The
samples are cached (a)-(e) items, so the loaders are bound by collation and hand-over ((d): a hand-written
``pad_sequence`` collate_fn against ``pad_collate``); ``decode`` spends a few ms of work per sample, where neither
loader can be faster than its workers. Outputs are checked equal first.
"""

from __future__ import annotations

import pathlib
import sys
import time
import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import Cycled, assert_equal, python_pad_collate, samples
from _scale import scaled

WORKERS = 2
BATCHES = {"a64": 40, "a256": 16, "b": 24, "c": 100, "d": 100, "e": 100, "decode": 12}
DECODE_BATCH = 32


class _Decoded(Dataset[Any]):
    """A few ms of deterministic work per sample (a stand-in for decoding and augmenting an image)."""

    def __init__(self, n: int) -> None:
        self.n = n
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(96, 96, generator=g) / 10

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        x = torch.full((3, 96, 96), float(i % 7))
        for _ in range(30):
            x = torch.tanh(x @ self.w)
        return x, i


def _loaders(workload: str) -> tuple[DataLoader[Any], DataLoader[Any]]:
    import fastcollate

    n = scaled(BATCHES[workload], 3)
    if workload == "decode":
        data: Dataset[Any] = _Decoded(n * DECODE_BATCH)
        batch = DECODE_BATCH
    else:
        items = samples(workload)
        data, batch = Cycled(items, n * len(items)), len(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory=True without an accelerator
        stock = DataLoader(data, batch_size=batch, num_workers=WORKERS, pin_memory=True, persistent_workers=True)
    if workload == "d":  # padded sequences: a hand-written pad_sequence collate_fn against pad_collate in slots
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stock = DataLoader(
                data,
                batch_size=batch,
                num_workers=WORKERS,
                pin_memory=True,
                persistent_workers=True,
                collate_fn=python_pad_collate,
            )
        return stock, fastcollate.slot_loader(stock, collate_fn=fastcollate.pad_collate)
    return stock, fastcollate.slot_loader(stock)


class _Epochs:
    """Runs epochs of a loader, adding up wall time, main-process CPU time and batches."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader
        self.wall = self.cpu = 0.0
        self.batches = 0

    def __call__(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in self.loader:
            self.batches += 1
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall


@pytest.mark.parametrize("workload", ["a64", "a256", "b", "c", "d", "e", "decode"])
def test_slot_loader_against_stock_workers(
    benchmark: Any, interleaved_baseline: Any, report: Any, workload: str
) -> None:
    stock, slots = _loaders(workload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for got, expected in zip(slots, stock, strict=True):  # also starts both loaders' workers
            assert_equal(got, expected)
    base, cand = _Epochs(stock), _Epochs(slots)
    benchmark.group = f"worker loader {workload}"
    benchmark.extra_info.update(
        workload=f"{workload} w{WORKERS}",
        candidate="slot_loader (2 workers)",
        baseline="DataLoader (2 workers)",
        steps=len(stock),
    )
    setup = interleaved_baseline(benchmark, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark.pedantic(cand, setup=setup, rounds=scaled(5, 1), warmup_rounds=scaled(1, 0))
    if base.batches and cand.batches:
        speed = (cand.batches / cand.wall) / (base.batches / base.wall)
        cpu = (cand.cpu / cand.batches) / (base.cpu / base.batches)
        report(
            f"{workload:>6} w{WORKERS}  slot_loader vs DataLoader: {speed:.2f}x batches/s "
            f"({cand.batches / cand.wall:.1f} vs {base.batches / base.wall:.1f}), main-process CPU per batch "
            f"{cpu:.3f}x ({cand.cpu / cand.batches * 1e3:.2f} vs {base.cpu / base.batches * 1e3:.2f} ms)"
        )
