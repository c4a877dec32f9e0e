"""The on-disk format of a checkpoint directory, owned here: other packages read it through these names.

A checkpoint directory holds one folder per committed checkpoint (``<part>.pt`` files and a ``manifest.json`` listing
them with their SHA-256 and size) and a ``latest`` pointer file naming the newest one. A copy (e.g. an upload) is
consistent when it writes :meth:`CheckpointInfo.commit_stages` in order, then the pointer.

Layouts: ``'plain'`` (every part one file, written by one process) and ``'dcp'`` (sharded: the parts every rank
holds a share of are DCP files in ``shards/``, listed file by file in the manifest's ``sharded`` entry with the world
size that wrote them; their non-tensor values are the plain part ``sharded_rest``; see
:mod:`aitoolbox.checkpointing.sharded`). :meth:`CheckpointInfo.files` lists every file of either.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aitoolbox.checkpointing._fs import HashingWriter, atomic_write_bytes, fsync_dir, sha256_file
from aitoolbox.checkpointing.errors import CheckpointCorruptError, CheckpointIncompatibleError
from aitoolbox.checkpointing.sharded import DCP_METADATA, SHARDS, ShardedState, merge_trees

__all__ = [
    "FORMAT",
    "LATEST",
    "MANIFEST",
    "SHARDED_REST",
    "CheckpointInfo",
    "LoadedCheckpoint",
    "check_name",
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
#: the plain part of a sharded checkpoint that holds the non-tensor values of its sharded parts
SHARDED_REST = "sharded_rest"


def check_name(name: object, what: str) -> str:
    """``name`` if it is one plain entry of a folder (a checkpoint or file name read from a pointer, a manifest or a
    listing): not empty, no ``/``, ``\\`` or NUL, not ``.``/``..`` nor hidden, no surrounding whitespace. Anything
    else could resolve outside the folder (a damaged or hostile copy) and is refused.

    >>> check_name("ckpt-e0001-i000000010", "the pointer")
    'ckpt-e0001-i000000010'
    >>> check_name("../../escaped", "the pointer")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    aitoolbox.checkpointing.errors.CheckpointCorruptError: the pointer names '../../escaped', which is not a plain ...
    """
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or name != name.strip()
        or any(c in name for c in "/\\\0")
    ):
        raise CheckpointCorruptError(
            f"{what} names {name!r}, which is not a plain name inside its folder (a damaged or hostile copy?); "
            "it is refused"
        )
    return name


def pointer_bytes(name: str) -> bytes:
    """The content of a ``latest`` pointer naming checkpoint ``name``."""
    return (check_name(name, "a checkpoint") + "\n").encode()


def read_pointer(data: bytes, where: object = "a latest pointer") -> str | None:
    """The checkpoint name a ``latest`` pointer's content names, or ``None`` when empty.

    Raises:
        CheckpointCorruptError: the content is not UTF-8 or does not name a plain folder entry.
    """
    try:
        text = data.decode().strip()
    except UnicodeDecodeError as err:
        raise CheckpointCorruptError(f"{where} is not UTF-8 text ({err}); it is damaged") from err
    return check_name(text, str(where)) if text else None


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint folder (it has a manifest)."""
    return (path / MANIFEST).is_file()


def serialized_bytes(obj: Any) -> int:
    """About how many bytes ``torch.save`` writes for ``obj``, never less: tensor data plus ~512 bytes of record per
    tensor, string and bytes lengths, 64 bytes per other value (measured overhead: 250-370 bytes per tensor)."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes + 512
    if isinstance(obj, str | bytes | bytearray):
        return len(obj) * (4 if isinstance(obj, str) else 1) + 64
    if isinstance(obj, Mapping):
        return 64 + sum(serialized_bytes(k) + serialized_bytes(v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return 64 + sum(serialized_bytes(v) for v in obj)
    return 64


def checkpoint_bytes(snapshot: Mapping[str, Any]) -> int:
    """The disk space a checkpoint of these parts takes at most: each part's file (with 8 KiB for the archive and the
    file system's last block) and the manifest."""
    return sum(serialized_bytes(part) + 8192 for part in snapshot.values()) + 8192


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


def write_manifest(
    tmp: Path,
    name: str,
    epoch: int,
    iteration: int,
    metrics: Mapping[str, float],
    files: Mapping[str, Any],
    meta: Mapping[str, Any],
    **extra: Any,
) -> None:
    """``tmp``'s manifest (``extra``: a sharded checkpoint's layout entries), written atomically, ``tmp`` fsync'd."""
    manifest = {
        "format": FORMAT,
        "name": name,
        "epoch": epoch,
        "iteration": iteration,
        "created": time.time(),
        "metrics": dict(metrics),
        "parts": dict(files),
        "meta": dict(meta),
        "torch": torch.__version__,
        **extra,
    }
    atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
    fsync_dir(tmp)


def damaged_message(where: object, damage: list[str]) -> str:
    """The error for a place whose committed checkpoints all failed verification, naming each one's damage."""
    shown = "; ".join(damage[:5]) + (f" (+{len(damage) - 5} more)" if len(damage) > 5 else "")
    return (
        f"{len(damage)} committed checkpoint(s) in {where}, and every one is damaged: {shown}. Restore the folder "
        "from a copy (e.g. the cloud mirror), resume from another path, or start without resuming"
    )


def _check_entry(path: Path, part: object, entry: object, *, shard: bool = False) -> None:
    """A manifest's part entry: ``{"file": <plain name>, "sha256": <64 hex>, "bytes": <int >= 0>}`` (a shard's:
    keyed by its file name, DCP's metadata file included, without ``file``)."""
    where = f"{path / MANIFEST}: {'shard' if shard else 'part'} {part!r}"
    if part != DCP_METADATA or not shard:
        check_name(part, f"{path / MANIFEST}: a {'shard' if shard else 'part'}")
    if not isinstance(entry, dict):
        raise CheckpointCorruptError(f"{where} is {type(entry).__name__}, not an entry with file, sha256 and bytes")
    if not shard:
        check_name(entry.get("file"), f"{where} 'file'")
    digest, size = entry.get("sha256"), entry.get("bytes")
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointCorruptError(f"{where} has no SHA-256 (got {digest!r}); the manifest is damaged")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointCorruptError(f"{where} has no byte count (got {size!r}); the manifest is damaged")


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
    #: ``'plain'`` or ``'dcp'`` (sharded), and the number of processes that wrote it
    layout: str = "plain"
    world_size: int = 1
    #: a sharded checkpoint's sharded parts (e.g. ``['model', 'optimizer']``) and DCP files (name -> sha256, bytes)
    sharded_parts: tuple[str, ...] = ()
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: shard files written on machines that do not share this folder, stored by their ranks (e.g. in the bucket)
    elsewhere: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path) -> CheckpointInfo:
        """Read ``path/manifest.json``; raises :class:`CheckpointCorruptError` if it is missing, unreadable, or any
        name in it (the checkpoint's, a part's file) is not a plain name inside the folder."""
        try:
            manifest = json.loads((path / MANIFEST).read_bytes())
            info = cls(
                path=path,
                name=manifest["name"],
                epoch=int(manifest["epoch"]),
                iteration=int(manifest["iteration"]),
                created=float(manifest["created"]),
                metrics=dict(manifest.get("metrics", {})),
                parts=dict(manifest["parts"]),
                meta=dict(manifest.get("meta", {})),
                layout=str(manifest.get("layout", "plain")),
                world_size=int(manifest.get("world_size", 1)),
                sharded_parts=tuple(str(p) for p in manifest.get("sharded", {}).get("parts", ())),
                shards=dict(manifest.get("sharded", {}).get("files", {})),
                elsewhere=tuple(str(f) for f in manifest.get("sharded", {}).get("elsewhere", ())),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointCorruptError(f"{path} has no readable {MANIFEST}: {err!r}") from err
        check_name(info.name, f"{path / MANIFEST}: 'name'")
        if info.layout not in ("plain", "dcp") or (info.layout == "dcp") != bool(info.shards):
            raise CheckpointCorruptError(
                f"{path / MANIFEST}: layout {info.layout!r} with {len(info.shards)} shard files; the manifest is "
                "damaged (or written by a newer version)"
            )
        for part, entry in info.parts.items():
            _check_entry(path, part, entry)
        for shard, entry in info.shards.items():
            _check_entry(path, shard, entry, shard=True)
        if not set(info.elsewhere) <= set(info.shards):
            raise CheckpointCorruptError(f"{path / MANIFEST}: 'elsewhere' names files it does not list")
        return info

    def files(self) -> list[tuple[str, Path, dict[str, Any]]]:
        """Every data file of the checkpoint (the manifest aside): ``(label, path, entry)`` with the entry's
        ``sha256`` and ``bytes``; a shard's path is in ``shards/``, labelled ``shards/<file>``."""
        out = [(f"part {part!r}", self.path / entry["file"], entry) for part, entry in self.parts.items()]
        out += [(f"{SHARDS}/{name}", self.path / SHARDS / name, entry) for name, entry in self.shards.items()]
        return out

    def verify(self) -> None:
        """Check that every part's file exists with the manifest's size and SHA-256.

        Raises:
            CheckpointCorruptError: naming the first file that does not match.
        """
        for label, path, entry in self.files():
            try:
                digest, size = sha256_file(path)
            except OSError as err:
                if path.name in self.elsewhere and path.parent.name == SHARDS:
                    raise CheckpointCorruptError(
                        f"{self.name}: {label} was written on another machine (no filesystem shared with rank 0) and "
                        "stored by its rank in the cloud mirror, not here: resume with the cloud mirror to fetch it"
                    ) from err
                raise CheckpointCorruptError(f"{self.name}: {label} ({path}) cannot be read: {err}") from err
            if size != entry["bytes"]:
                raise CheckpointCorruptError(
                    f"{self.name}: {label} has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
                )
            if digest != entry["sha256"]:
                raise CheckpointCorruptError(f"{self.name}: {label} fails its SHA-256 check (damaged file)")

    def commit_stages(self) -> list[list[Path]]:
        """The checkpoint's files in the order a copy must write them: the parts and shards (but those stored
        :attr:`elsewhere` by their ranks), then the manifest (then the pointer, :func:`pointer_bytes` of
        :attr:`name`, in the parent directory's :data:`LATEST`)."""
        here = [path for _, path, _ in self.files() if path.name not in self.elsewhere or path.parent.name != SHARDS]
        return [here, [self.path / MANIFEST]]


@dataclass
class LoadedCheckpoint:
    """The parts of a verified checkpoint, loaded with ``torch.load(weights_only=True)``.

    A sharded part (:attr:`CheckpointInfo.sharded_parts`) is read when asked for: ``loaded['model']`` gives it whole,
    as plain CPU tensors (in one process, without a process group); :meth:`read_sharded` loads it into this rank's
    shards (any world size).
    """

    info: CheckpointInfo
    parts: dict[str, Any]
    #: the non-tensor values of the sharded parts
    rest: dict[str, Any] = field(default_factory=dict)
    _whole: dict[str, Any] | None = None

    @property
    def sharded(self) -> ShardedState | None:
        """The DCP files of a sharded checkpoint (``None`` for a plain one)."""
        return ShardedState(self.info.path / SHARDS) if self.info.layout == "dcp" else None

    def __getitem__(self, part: str) -> Any:
        if part in self.parts or part not in self.info.sharded_parts:
            return self.parts[part]
        if self._whole is None:
            assert self.sharded is not None
            self._whole = self.sharded.read()
        return merge_trees(self._whole.get(part), self.rest.get(part))

    def __contains__(self, part: object) -> bool:
        return part in self.parts or part in self.info.sharded_parts

    def read_sharded(self, targets: Mapping[str, Any], collective: Any = None) -> dict[str, Any]:
        """Sharded parts loaded into ``targets`` (part name -> the state this rank holds, e.g. DTensor shards, in
        the form it was saved): the tensors in place (DCP reshards across world sizes), merged with the saved
        non-tensor values. Every rank calls it (with ``collective``, a
        :class:`~aitoolbox.checkpointing.sharded.GroupCollective`, in a distributed run)."""
        from aitoolbox.checkpointing.sharded import split_tensors

        assert self.sharded is not None, "read_sharded() on a plain checkpoint"
        tensors = {part: split_tensors(targets[part])[0] or {} for part in targets}
        self.sharded.read(tensors, collective=collective)
        return {part: merge_trees(tensors[part], self.rest.get(part)) for part in targets}


def load_parts(
    info: CheckpointInfo, required: Iterable[str], allow_partial: bool, map_location: str | torch.device
) -> LoadedCheckpoint:
    """Load the parts of a verified checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointIncompatibleError: a ``required`` part is missing and ``allow_partial`` is False.
        CheckpointCorruptError: a part cannot be loaded (written by an incompatible writer, or deleted meanwhile).
    """
    missing = sorted(set(required) - set(info.parts) - set(info.sharded_parts))
    if missing and not allow_partial:
        raise CheckpointIncompatibleError(
            f"checkpoint {info.path} lacks the parts {missing} (it has {sorted(info.parts)}); "
            "pass allow_partial=True to load what it has"
        )
    parts = {}
    for part, entry in info.parts.items():
        try:
            parts[part] = torch.load(info.path / entry["file"], map_location=map_location, weights_only=True)
        except Exception as err:  # checksum-valid but unloadable (an incompatible writer), or deleted meanwhile
            raise CheckpointCorruptError(f"{info.name}: part {part!r} cannot be loaded: {err}") from err
    rest = parts.pop(SHARDED_REST, None) if info.layout == "dcp" else None
    return LoadedCheckpoint(info, parts, dict(rest or {}))
