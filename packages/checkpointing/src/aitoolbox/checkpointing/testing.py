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

__all__ = ["SmallDiskUnavailable", "small_disk"]


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
