"""The on-disk format of a checkpoint directory, owned here: other packages read it through these names.

A checkpoint directory holds one folder per committed checkpoint (``<part>.pt`` files and a ``manifest.json`` listing
them with their SHA-256 and size) and a ``latest`` pointer file naming the newest one. A copy (e.g. an upload) is
consistent when it writes :meth:`CheckpointInfo.commit_stages` in order, then the pointer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aitoolbox.checkpointing._fs import HashingWriter, sha256_file
from aitoolbox.checkpointing.errors import CheckpointCorruptError

__all__ = [
    "FORMAT",
    "LATEST",
    "MANIFEST",
    "CheckpointInfo",
    "LoadedCheckpoint",
    "damaged_message",
    "is_checkpoint",
    "pointer_bytes",
    "read_pointer",
]

#: the manifest of one checkpoint folder
MANIFEST = "manifest.json"
#: the pointer file of a checkpoint directory, naming its newest committed checkpoint
LATEST = "latest"
FORMAT = 1


def pointer_bytes(name: str) -> bytes:
    """The content of a ``latest`` pointer naming checkpoint ``name``."""
    return (name + "\n").encode()


def read_pointer(data: bytes) -> str | None:
    """The checkpoint name a ``latest`` pointer's content names, or ``None`` when empty."""
    return data.decode().strip() or None


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint folder (it has a manifest)."""
    return (path / MANIFEST).is_file()


def tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def write_parts(tmp: Path, snapshot: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each part as ``<part>.pt`` in ``tmp``, fsync'd; a failed write raises its own OSError (e.g. ENOSPC)."""
    files: dict[str, dict[str, Any]] = {}
    for part, value in snapshot.items():
        path = tmp / f"{part}.pt"
        with open(path, "wb") as f:
            writer = HashingWriter(f)
            try:
                torch.save(value, writer)  # type: ignore[arg-type]
            except RuntimeError as err:
                if writer.error is not None:  # torch reports a failed write as "unexpected pos"
                    raise writer.error from err
                raise
            f.flush()
            os.fsync(f.fileno())
        files[part] = {"file": path.name, "sha256": writer.sha256.hexdigest(), "bytes": writer.size}
    return files


def damaged_message(where: object, damage: list[str]) -> str:
    """The error for a place whose committed checkpoints all failed verification, naming each one's damage."""
    shown = "; ".join(damage[:5]) + (f" (+{len(damage) - 5} more)" if len(damage) > 5 else "")
    return (
        f"{len(damage)} committed checkpoint(s) in {where}, and every one is damaged: {shown}. Restore the folder "
        "from a copy (e.g. the cloud mirror), resume from another path, or start without resuming"
    )


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint, as its manifest describes it."""

    path: Path
    name: str
    epoch: int
    iteration: int
    created: float
    metrics: dict[str, float] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> CheckpointInfo:
        """Read ``path/manifest.json``; raises :class:`CheckpointCorruptError` if it is missing or unreadable."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            return cls(
                path=path,
                name=manifest["name"],
                epoch=int(manifest["epoch"]),
                iteration=int(manifest["iteration"]),
                created=float(manifest["created"]),
                metrics=dict(manifest.get("metrics", {})),
                parts=dict(manifest["parts"]),
                meta=dict(manifest.get("meta", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointCorruptError(f"{path} has no readable {MANIFEST}: {err}") from err

    def verify(self) -> None:
        """Check that every part's file exists with the manifest's size and SHA-256.

        Raises:
            CheckpointCorruptError: naming the first file that does not match.
        """
        for part, entry in self.parts.items():
            path = self.path / entry["file"]
            try:
                digest, size = sha256_file(path)
            except OSError as err:
                raise CheckpointCorruptError(f"{self.name}: part {part!r} ({path}) cannot be read: {err}") from err
            if size != entry["bytes"]:
                raise CheckpointCorruptError(
                    f"{self.name}: part {part!r} has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
                )
            if digest != entry["sha256"]:
                raise CheckpointCorruptError(f"{self.name}: part {part!r} fails its SHA-256 check (damaged file)")

    def commit_stages(self) -> list[list[Path]]:
        """The checkpoint's files in the order a copy must write them: the parts, then the manifest (then the
        pointer, :func:`pointer_bytes` of :attr:`name`, in the parent directory's :data:`LATEST`)."""
        return [[self.path / entry["file"] for entry in self.parts.values()], [self.path / MANIFEST]]


@dataclass
class LoadedCheckpoint:
    """The parts of a verified checkpoint, loaded with ``torch.load(weights_only=True)``."""

    info: CheckpointInfo
    parts: dict[str, Any]

    def __getitem__(self, part: str) -> Any:
        return self.parts[part]

    def __contains__(self, part: object) -> bool:
        return part in self.parts
