"""The distributed helpers that need no process group: sharding, ordering, launch detection.

The real multi-process runs (torchrun, gloo) are in the repository's ``tests/test_distributed.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, WeightedRandomSampler

from aitoolbox.loop import _distributed, _sharding
from aitoolbox.loop._distributed import DistributedContext
from aitoolbox.loop._sharding import ShardedEvalSampler, interleave
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.testing import make_classification_data


def _ctx(rank: int, world: int = 3) -> DistributedContext:
    return DistributedContext(rank=rank, local_rank=rank, world_size=world, backend="gloo", owns_group=False)


def test_eval_shards_cover_every_sample_exactly_once() -> None:
    for n in range(0, 12):
        shards = [list(ShardedEvalSampler(n, r, 4)) for r in range(4)]
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        assert [len(ShardedEvalSampler(n, r, 4)) for r in range(4)] == [len(s) for s in shards]


def test_interleave_restores_dataset_order() -> None:
    n, world = 10, 3
    data = torch.arange(n * 2).view(n, 2)
    parts = [data[r::world] for r in range(world)]
    assert torch.equal(interleave(parts, n), data)
    try:
        import numpy as np  # optional for core-loop
    except ImportError:
        pass
    else:
        assert np.array_equal(interleave([p.numpy() for p in parts], n), data.numpy())
    assert interleave([list(range(r, n, world)) for r in range(world)], n) == list(range(n))
    # not per-sample (e.g. one value per batch): concatenated in rank order
    assert torch.equal(interleave([torch.tensor([1.0]), torch.tensor([2.0])], 7), torch.tensor([1.0, 2.0]))


def test_train_loader_is_sharded_with_every_option_kept() -> None:
    data = make_classification_data(30)
    gen = torch.Generator().manual_seed(1)

    def init(worker_id: int) -> None:
        pass

    loader = DataLoader(
        data,
        batch_size=4,
        shuffle=True,
        num_workers=2,
        pin_memory=True,
        drop_last=True,
        persistent_workers=True,
        prefetch_factor=3,
        worker_init_fn=init,
        generator=gen,
        timeout=7,
        collate_fn=torch.utils.data.default_collate,
    )
    shards = [_sharding.shard_train_loader(loader, _ctx(r), seed=5) for r in range(3)]
    for name in (
        "num_workers",
        "pin_memory",
        "drop_last",
        "persistent_workers",
        "prefetch_factor",
        "worker_init_fn",
        "generator",
        "timeout",
        "collate_fn",
        "batch_size",
        "dataset",
    ):
        assert getattr(shards[0], name) is getattr(loader, name), name
    sampler = shards[1].sampler
    assert isinstance(sampler, DistributedSampler) and sampler.shuffle and sampler.seed == 5 and sampler.rank == 1
    assert shards[1].batch_sampler.sampler is sampler and shards[1].batch_sampler.drop_last
    assert loader.sampler.__class__.__name__ == "RandomSampler", "the user's loader is untouched"
    for s in shards:
        s.sampler.set_epoch(3)
    indices = [i for s in shards for batch in s.batch_sampler for i in batch]
    assert len(indices) == len(set(indices)) == 24, "disjoint shards, full batches only (drop_last)"


def test_sequential_loader_is_sharded_without_shuffling_and_a_distributed_sampler_is_kept() -> None:
    data = make_classification_data(10)
    shard = _sharding.shard_train_loader(DataLoader(data, batch_size=2), _ctx(0, 2), seed=0)
    assert not shard.sampler.shuffle and list(shard.sampler) == [0, 2, 4, 6, 8]
    mine = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=1))
    assert _sharding.shard_train_loader(mine, _ctx(1, 2), seed=0) is mine


def test_unshardable_train_loaders_are_refused_with_the_fix() -> None:
    data = make_classification_data(10)
    weighted = DataLoader(data, batch_size=2, sampler=WeightedRandomSampler([1.0] * 10, 10))
    with pytest.raises(LoopConfigError, match="shard by rank yourself"):
        _sharding.shard_train_loader(weighted, _ctx(0), seed=0)

    class Stream(IterableDataset[int]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(3))

    with pytest.raises(LoopConfigError, match="map-style dataset"):
        _sharding.shard_train_loader(DataLoader(Stream(), batch_size=2), _ctx(0), seed=0)
    assert _sharding.shard_eval_loader(DataLoader(Stream(), batch_size=2), _ctx(0)) is None


def test_launch_is_detected_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not _distributed.launched() and _distributed.launched_rank() == 0
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _distributed.launched() and _distributed.launched_rank() == 3
    assert _distributed.rank_device("cpu") == "cpu"


def test_gpu_mode_ddp_without_gpus_uses_two_cpu_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torch import nn

    from aitoolbox.loop import TrainLoop
    from aitoolbox.loop.testing import TinyClassifier, make_classification_loader

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = TinyClassifier()
    tl = TrainLoop(
        model,
        make_classification_loader(32),
        None,
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        device="cpu",
        gpu_mode="ddp",
    )
    assert tl.is_main_process and tl.distributed is None
    from aitoolbox.loop._launch import _processes

    with caplog.at_level("WARNING"):
        assert _processes(None) == min(2, os.cpu_count() or 1)  # the original's DDP script runs on a laptop
        assert _processes(3) == 3
    assert "gpu_mode='ddp' without a GPU: training with" in caplog.text and "num_processes=N" in caplog.text


def test_a_launching_process_picks_its_device_without_initialising_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert _distributed.parent_device(None, None) == torch.device("cpu")
    assert _distributed.parent_device("cpu", None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _distributed.parent_device(None, None) == torch.device("cuda", 0)
    assert _distributed.parent_device("cuda:1", None) == torch.device("cuda", 1)
    assert _distributed.parent_device(None, 1) == torch.device("cuda", 1)


def test_gpu_mode_ddp_refuses_to_fork_after_cuda_was_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from aitoolbox.loop import TrainLoop
    from aitoolbox.loop.testing import TinyClassifier, make_classification_loader

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    model = TinyClassifier()
    tl = TrainLoop(
        model,
        make_classification_loader(32),
        None,
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        device="cpu",
        gpu_mode="ddp",
        num_processes=2,
    )
    # no GPU here: pretend this process placed a model on one (the only way to reach this check without CUDA)
    tl.device = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(LoopConfigError, match="CUDA was already initialised in this process.*launch the script with"):
        tl.fit(num_epochs=1)
