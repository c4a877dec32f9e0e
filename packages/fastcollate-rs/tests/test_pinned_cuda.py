"""With CUDA: outputs are pinned, ``pin_memory()`` returns them as they are, and a pinned block is not written
again while an asynchronous copy still reads it. Skipped where CUDA is missing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _compare import assert_same
from torch.utils.data import DataLoader, Dataset, default_collate

import fastcollate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _images(n: int, fill: float | None = None) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(n)
    if fill is None:
        return [(torch.randn(3, 64, 64, generator=g), i) for i in range(n)]
    return [(torch.full((3, 64, 64), fill), i) for i in range(n)]


def test_collate_pins_large_outputs_and_pin_memory_returns_them_without_a_copy() -> None:
    batch = _images(64)  # 64 x 48 KiB: the raw copy path
    got = fastcollate.collate(batch)
    assert_same(got, default_collate(batch))
    images = got[0]
    assert images.is_pinned()
    assert images.pin_memory().data_ptr() == images.data_ptr()  # what DataLoader(pin_memory=True) calls


def test_pin_memory_false_keeps_outputs_in_pageable_memory() -> None:
    got = fastcollate.collate(_images(64), pin_memory=False)
    assert not got[0].is_pinned()


def test_pad_collate_and_batched_gather_pin_their_outputs() -> None:
    seqs = [torch.arange(n) for n in (5, 9, 2)]
    padded = fastcollate.pad_collate(seqs)
    assert padded.data.is_pinned() and padded.mask.is_pinned()
    assert torch.equal(padded.data[1], torch.arange(9)) and padded.lengths.tolist() == [5, 9, 2]

    ds = fastcollate.BatchedTensorDataset(torch.arange(40.0).view(20, 2), torch.arange(20))
    x, y = ds[[3, 1]]
    assert x.is_pinned() and y.is_pinned()
    assert x.tolist() == [[6.0, 7.0], [2.0, 3.0]] and y.tolist() == [3, 1]


def test_a_pinned_batch_is_not_overwritten_while_its_non_blocking_copy_is_queued() -> None:
    """Each batch is dropped right after its copy is queued behind a long GPU kernel; the next batches are
    collated meanwhile. The caching host allocator must hand them other blocks until the copy has run."""
    stream = torch.cuda.current_stream()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time ahead of the copies, so they are still queued
    on_gpu = []
    for i in range(8):
        images, _ = fastcollate.collate(_images(64, fill=float(i)))
        assert images.is_pinned()
        on_gpu.append(images.to("cuda", non_blocking=True))
        del images
    assert not stream.query(), "the copies ran before the test could collate over them; lengthen the sleep"
    torch.cuda.synchronize()
    for i, batch in enumerate(on_gpu):
        assert torch.all(batch == i).item(), f"batch {i} was overwritten before its copy ran"


class _Samples(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self) -> None:
        self.items = [*_images(32), (torch.from_numpy(np.full((3, 64, 64), 7, np.float32)), 32)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pin_memory_loader_gives_pinned_batches_equal_to_default_collate(num_workers: int) -> None:
    extra = {"num_workers": num_workers}
    fast = DataLoader(_Samples(), batch_size=8, pin_memory=True, collate_fn=fastcollate.collate, **extra)
    base = DataLoader(_Samples(), batch_size=8, pin_memory=True, **extra)
    n = 0
    for got, want in zip(fast, base, strict=True):
        assert got[0].is_pinned() and got[1].is_pinned()
        assert_same(got, want)
        n += 1
    assert n == 5  # 33 samples: four full batches and one of a single sample


def test_numpy_image_batches_are_copied_into_pinned_memory() -> None:
    rng = np.random.default_rng(0)
    batch = [(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), i) for i in range(64)]  # 27 KiB each: Rust path
    got = fastcollate.collate(batch)
    assert_same(got, default_collate(batch))
    images = got[0]
    assert images.is_pinned()
    assert images.pin_memory().data_ptr() == images.data_ptr()


def test_slot_batches_are_pinned_in_place_and_kept_until_their_copies_have_run() -> None:
    """``slot_loader`` with ``pin_memory=True``: the slots are registered with CUDA, so each batch (a new arena's
    slots are sized from the first batch's samples) is pinned where the worker wrote it (``pin_memory`` copies
    nothing), and a slot is not written again while a ``non_blocking`` copy queued behind a long kernel still reads
    it: the device-side sums equal the stock loader's although every host batch is dropped right after its copy is
    queued."""
    import _slot_data as data

    from fastcollate import _arena

    stock = DataLoader(data.Numbered(8 * 24, features=12288), batch_size=8, num_workers=2, pin_memory=True)

    def sums(loader: DataLoader[Any], slotted: bool) -> list[float]:
        out = []
        for i, (x, y) in enumerate(loader):
            if slotted:
                assert x.is_pinned() and _arena.slot_of(x) is not None, f"batch {i} was copied by pin_memory"
            torch.cuda._sleep(20_000_000)
            gx, gy = x.to("cuda", non_blocking=True), y.to("cuda", non_blocking=True)
            del x, y
            out.append(gx.double().sum() + gy.double().sum())
        torch.cuda.synchronize()
        return [float(s) for s in out]

    expected = sums(stock, False)
    assert sums(fastcollate.slot_loader(stock), True) == expected
    assert expected == [float(sum(range(8 * i, 8 * i + 8)) * (12288 + 1)) for i in range(24)]
