"""BatchedTensorDataset: one gather per batch, equal to TensorDataset + default_collate."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fastcollate


def test_loader_batches_equal_tensor_dataset_batches() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1000, 32, generator=g), torch.randint(0, 10, (1000,), generator=g)
    fast = fastcollate.BatchedTensorDataset(x, y)
    sampler = fastcollate.batch_sampler(fast, 64, shuffle=True, generator=torch.Generator().manual_seed(3))
    plain = DataLoader(
        TensorDataset(x, y),
        batch_sampler=fastcollate.batch_sampler(fast, 64, shuffle=True, generator=torch.Generator().manual_seed(3)),
    )
    got = list(DataLoader(fast, batch_size=None, sampler=sampler))
    expected = list(plain)
    assert len(got) == len(expected) == 16
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(gx, ex) and torch.equal(gy, ey)


def test_large_gathers_use_several_threads_and_stay_correct() -> None:
    x = torch.randn(4096, 1024)  # 16 MiB dataset, 8 MiB batches
    ds = fastcollate.BatchedTensorDataset(x)
    idx = torch.randperm(4096)[:2048]
    fastcollate.set_num_threads(3)
    try:
        (out,) = ds[idx]
    finally:
        fastcollate.set_num_threads(None)
    assert torch.equal(out, x[idx])


def test_single_index_and_negative_indices() -> None:
    ds = fastcollate.BatchedTensorDataset(torch.arange(10).view(5, 2), torch.arange(5))
    assert [t.tolist() for t in ds[-1]] == [[8, 9], 4]
    assert [t.tolist() for t in ds[[-1, 0]]] == [[[8, 9], [0, 1]], [4, 0]]
    assert len(ds) == 5


def test_bad_indices_and_tensors_are_clear_errors() -> None:
    ds = fastcollate.BatchedTensorDataset(torch.zeros(5, 2))
    message = "index 5 at position 2 is out of range for a dataset of 5 rows"
    with pytest.raises(fastcollate.CollateIndexError, match=message):
        ds[[0, 1, 5]]
    with pytest.raises(IndexError):
        ds[[-6]]
    with pytest.raises(fastcollate.CollateShapeError, match="tensor 1 has 4 rows but tensor 0 has 5"):
        fastcollate.BatchedTensorDataset(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(fastcollate.CollateTypeError, match="tensor 0 must be a tensor with a first"):
        fastcollate.BatchedTensorDataset(torch.tensor(1.0))


def test_worker_batches_share_one_segment_for_small_outputs_only() -> None:
    features = torch.arange(30 * 4096.0).view(30, 4096)  # 8 rows: 128 KiB, above the packing limit
    fast = fastcollate.BatchedTensorDataset(torch.arange(60.0).view(30, 2), torch.arange(30), features)
    sampler = fastcollate.batch_sampler(fast, 8)
    for x, y, big in DataLoader(fast, batch_size=None, sampler=sampler, num_workers=2):
        assert torch.equal(x[:, 0], 2.0 * y) and torch.equal(big[:, 0], 4096.0 * y) and x.is_shared()
        assert x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
        assert big.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
        assert big.untyped_storage().nbytes() == big.nbytes
