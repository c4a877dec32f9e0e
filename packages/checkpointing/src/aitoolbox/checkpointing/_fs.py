"""Durable file-system primitives: fsync'd writes, atomic replace, SHA-256 while writing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

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
