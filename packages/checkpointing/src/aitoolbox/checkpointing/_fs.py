"""Durable file-system primitives: fsync'd writes, atomic replace, SHA-256 while writing, room checks before a
write, and the owner tag that lets a sweep tell a dead writer's temporary folders from a live one's."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from aitoolbox.checkpointing.errors import CheckpointWriteError

CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """A write-only binary stream that forwards to ``f`` and hashes what passes through (no second read)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0
        #: the OSError a write raised: torch.save reports it only as "unexpected pos", so the caller re-raises this
        self.error: OSError | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha256.update(data)
        try:
            written = self._f.write(data)
        except OSError as err:
            self.error = err
            raise
        self.size += len(data) if written is None else written
        return len(data)

    def flush(self) -> None:
        self._f.flush()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def owner_tag() -> str:
    """``@<host>@<pid>``: ends the name of a temporary folder, so that a sweep leaves another live writer's alone."""
    return f"@{socket.gethostname()}@{os.getpid()}"


def is_stale(entry: Path, day_s: float = 86_400.0) -> bool:
    """Whether a temporary folder's writer is gone: a dead process of this host (another host's: a day old)."""
    parts = entry.name.split("@")
    if len(parts) != 3 or not parts[2].isdigit():
        return True  # written by a version before the owner tag
    host, pid = parts[1], int(parts[2])
    if host != socket.gethostname():
        try:
            return entry.stat().st_mtime < time.time() - day_s
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def trash_path(directory: Path, name: str) -> Path:
    """Where checkpoint ``name`` goes to be deleted: a hidden, owner-tagged folder of ``directory``."""
    return directory / f".trash-{name}-{uuid.uuid4().hex[:8]}{owner_tag()}"


def retire(path: Path) -> None:
    """Delete a checkpoint folder atomically: renamed out of sight first (a crash mid-way leaves trash that
    :func:`sweep_stale` removes, never a half-deleted checkpoint), then removed."""
    trash = trash_path(path.parent, path.name)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # already gone (another process's retention)
    shutil.rmtree(trash, ignore_errors=True)


def sweep_stale(directory: Path) -> None:
    """Remove what a killed writer left: its temporary folders and the trash of an interrupted deletion (never a
    live writer's folder, e.g. another process committing into the same directory)."""
    for entry in directory.iterdir():
        if entry.name.startswith((".tmp-", ".trash-")) and entry.is_dir() and is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)


def check_room(directory: Path, needed: int) -> None:
    """Refuse, before any byte is written, to write ``needed`` bytes into ``directory`` (or the folder it will be
    made in): not a folder, read-only, not writable, or less free space.

    Raises:
        CheckpointWriteError: with ``errno`` ENOTDIR, EROFS, EACCES or ENOSPC and the fix.
    """
    where = directory
    while not where.exists() and where.parent != where:
        where = where.parent
    kept = "Earlier checkpoints are untouched"
    if not where.is_dir():
        raise CheckpointWriteError(
            errno.ENOTDIR,
            f"cannot write a checkpoint into {directory}: {where} is not a folder; move it away or save elsewhere. "
            + kept,
        )
    read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    if read_only or not os.access(where, os.W_OK | os.X_OK):
        state = "on a read-only file system" if read_only else "not writable"
        raise CheckpointWriteError(
            errno.EROFS if read_only else errno.EACCES,
            f"cannot write a checkpoint into {directory}: {where} is {state}; remount it read-write or save "
            "elsewhere. " + kept,
        )
    free = shutil.disk_usage(where).free
    if needed > free:
        raise CheckpointWriteError(
            errno.ENOSPC,
            f"no space left on device for a checkpoint in {directory}: it needs about {needed / 2**20:.1f} MiB and "
            f"{free / 2**20:.1f} MiB are free; free some space (or keep fewer checkpoints, keep_last/keep_best) or "
            "save elsewhere. " + kept,
        )
