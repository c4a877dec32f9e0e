"""A full disk, for real: a 1 MiB tmpfs. The error says "no space left on device" at the failing save, no
half-written checkpoint stays, and the earlier checkpoints still load."""

from __future__ import annotations

import errno
import shutil
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


def test_a_disk_that_fills_during_the_write_names_enospc_and_leaves_nothing_half_written(small_disk: Path) -> None:
    manager = CheckpointManager(small_disk / "ckpt", background=True)
    manager.save(_state(1000, 1.0), epoch=1, iteration=1)
    manager.wait()
    free = shutil.disk_usage(small_disk).free
    manager.save(
        _state((free - 4096) // 4), epoch=2, iteration=2
    )  # passes the estimate; the file overhead does not fit
    with pytest.raises(CheckpointWriteError, match=r"No space left on device; free some space") as err:
        manager.wait()
    assert err.value.errno == errno.ENOSPC
    assert "unexpected pos" not in str(err.value)
    assert sorted(p.name for p in (small_disk / "ckpt").iterdir()) == ["ckpt-e0001-i000000001", "latest"]
    assert [i.epoch for i in manager.list()] == [1]
    manager.save(_state(1000, 3.0), epoch=3, iteration=3)  # the space came back: saving works again
    manager.wait()
    assert torch.equal(manager.load()["model"]["w"], torch.full((1000,), 3.0))
