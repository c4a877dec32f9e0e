"""A full disk, for real: a 1 MiB tmpfs. The error says "no space left on device" at the failing save, no
half-written checkpoint stays, and the earlier checkpoints still load."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from aitoolbox.checkpointing import CheckpointManager, CheckpointWriteError
from aitoolbox.checkpointing.testing import SmallDiskUnavailable
from aitoolbox.checkpointing.testing import small_disk as mounted


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with mounted(tmp_path / "disk", "1m") as disk:
            yield disk
    except SmallDiskUnavailable as err:
        pytest.skip(str(err))


def _state(n_floats: int, value: float = 1.0) -> dict[str, dict[str, torch.Tensor]]:
    return {"model": {"w": torch.full((n_floats,), value)}}


@pytest.mark.parametrize("background", [True, False])
def test_a_checkpoint_larger_than_the_free_space_is_refused_at_its_save(small_disk: Path, background: bool) -> None:
    manager = CheckpointManager(small_disk / "ckpt", background=background)
    manager.save(_state(1000, 1.0), epoch=1, iteration=1)
    manager.wait()
    with pytest.raises(CheckpointWriteError, match="no space left on device for a checkpoint .* MiB are free") as err:
        manager.save(_state(1 << 20), epoch=2, iteration=2)  # 4 MiB on a 1 MiB disk
    assert err.value.errno == errno.ENOSPC
    assert [i.epoch for i in manager.list()] == [1]
    assert torch.equal(manager.load()["model"]["w"], torch.full((1000,), 1.0))


@pytest.mark.parametrize("background", [True, False])
def test_what_the_tensors_alone_do_not_show_is_counted_at_the_save(small_disk: Path, background: bool) -> None:
    """Non-tensor data and the file overhead count too: a checkpoint whose tensors alone fit but whose file does not
    is refused at its own save (before, its background write failed and only the next save reported it)."""
    manager = CheckpointManager(small_disk / "ckpt", background=background)
    manager.save(_state(1000, 1.0), epoch=1, iteration=1)
    manager.wait()
    half = shutil.disk_usage(small_disk).free // 2
    state = {"model": {"w": torch.ones(half // 4)}, "loop": {"notes": "x" * half}}
    with pytest.raises(CheckpointWriteError, match="no space left on device for a checkpoint") as err:
        manager.save(state, epoch=2, iteration=2)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (small_disk / "ckpt").iterdir()) == ["ckpt-e0001-i000000001", "latest"]
    manager.save(_state(1000, 3.0), epoch=3, iteration=3)  # what fits still saves
    manager.wait()
    assert torch.equal(manager.load()["model"]["w"], torch.full((1000,), 3.0))


def test_a_read_only_remount_is_refused_at_the_save(small_disk: Path) -> None:
    manager = CheckpointManager(small_disk / "ckpt")
    manager.save(_state(1000, 1.0), epoch=1, iteration=1)
    manager.wait()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(CheckpointWriteError, match="is on a read-only file system; remount it") as err:
            manager.save(_state(1000, 2.0), epoch=2, iteration=2)
        assert err.value.errno == errno.EROFS
        assert manager.load().info.epoch == 1
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
