"""Test helpers: a real full disk (a small tmpfs), for the no-space paths of checkpoint saving.

Example:
    .. code-block:: python

        with small_disk(tmp_path / "disk", size="1m") as disk:
            CheckpointManager(disk / "ckpt").save(...)   # raises CheckpointWriteError (ENOSPC) when it cannot fit
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aitoolbox.checkpointing.sharded import GroupCollective

__all__ = ["SmallDiskUnavailable", "one_rank_group", "small_disk"]


class SmallDiskUnavailable(RuntimeError):
    """A tmpfs cannot be mounted here (not root, or no mount permission in this container)."""


@contextlib.contextmanager
def small_disk(path: str | Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (created) for the ``with`` block, then unmount it.

    Raises:
        SmallDiskUnavailable: the mount is not permitted here (tests skip on it).
    """
    mount = Path(path)
    mount.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        raise SmallDiskUnavailable(f"cannot mount a tmpfs at {mount}: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@contextlib.contextmanager
def one_rank_group() -> Iterator[GroupCollective]:
    """A process group of one rank (gloo, its store in memory) for the ``with`` block, and a sharded save's own
    group in it: sharded, background saves in one process."""
    import torch.distributed as dist

    from aitoolbox.checkpointing.sharded import GroupCollective

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # type: ignore[attr-defined]
    try:
        yield GroupCollective.new_group()
    finally:
        dist.destroy_process_group()
