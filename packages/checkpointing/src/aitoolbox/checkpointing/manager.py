"""CheckpointManager: when and where checkpoints are committed, verified, loaded and retired."""

from __future__ import annotations

import builtins
import errno
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from aitoolbox.checkpointing._fs import (
    atomic_write_bytes,
    check_room,
    fsync_dir,
    owner_tag,
    retire,
    sweep_stale,
    trash_path,
)
from aitoolbox.checkpointing._retention import check_retention, retained
from aitoolbox.checkpointing._sharded_commit import ShardedCommit
from aitoolbox.checkpointing.errors import (
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)
from aitoolbox.checkpointing.layout import (
    LATEST,
    SHARDED_REST,
    CheckpointInfo,
    LoadedCheckpoint,
    check_name,
    checkpoint_bytes,
    damaged_message,
    load_parts,
    pointer_bytes,
    read_pointer,
    write_manifest,
    write_parts,
)
from aitoolbox.checkpointing.sharded import (
    GroupCollective,
)
from aitoolbox.checkpointing.snapshot import SnapshotBuffers, check_plain

__all__ = ["CheckpointInfo", "CheckpointManager", "LoadedCheckpoint", "damaged_message"]  # the first three: layout

logger = logging.getLogger(__name__)


def _fmt_metric(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class CheckpointManager(ShardedCommit):
    """Commit checkpoints atomically into ``directory``, keep the ones retention asks for, load the newest good one.

    A checkpoint is a directory of parts (one ``<part>.pt`` file each) and a ``manifest.json`` that lists them with
    their SHA-256. The commit protocol: write everything into a hidden temporary directory and fsync it, rename it into
    place (atomic), then replace the ``latest`` pointer; retention deletes old checkpoints only after that. A crash at
    any point leaves ``latest`` naming a complete checkpoint (or nothing). Loading verifies every checksum and falls
    back to the previous good checkpoint, with a warning, when the newest is damaged.

    Args:
        directory: where checkpoints live; created if missing.
        keep_last: keep the newest ``keep_last`` checkpoints (``None``: keep all).
        keep_best: also keep the ``keep_best`` best checkpoints by ``monitor``.
        monitor: the metric (from the metrics given to :meth:`save`) that ranks checkpoints for ``keep_best``.
        mode: ``'min'`` or ``'max'``: which direction of ``monitor`` is better.
        background: write on a background thread; :meth:`save` only blocks to copy the state to CPU memory.
        on_commit: called with the :class:`CheckpointInfo` of each checkpoint once it is committed and ``latest``
            names it (on the writing thread), e.g. to upload it. An exception it raises is reported like a write error.
        may_delete: retention deletes a checkpoint only when this returns True for it (e.g. once it is uploaded);
            a checkpoint kept back is deleted by a later commit.
        collective: for sharded saves in a distributed run (``save(sharded=...)``), the ranks that write together
            (:class:`~aitoolbox.checkpointing.sharded.GroupCollective`; a background save needs a group of its
            own). Every rank makes a manager on the same directory; rank 0 commits, lists, loads and retires.

    Example:
        >>> import tempfile, torch
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last=2, background=False)
        >>> for epoch in range(3):
        ...     _ = manager.save({"model": {"w": torch.full((2,), float(epoch))}}, epoch=epoch, iteration=10 * epoch)
        >>> [info.epoch for info in manager.list()]
        [1, 2]
        >>> manager.load(required=["model"])["model"]["w"]
        tensor([2., 2.])
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = None,
        keep_best: int = 0,
        monitor: str | None = None,
        mode: str = "min",
        background: bool = True,
        on_commit: Callable[[CheckpointInfo], None] | None = None,
        may_delete: Callable[[CheckpointInfo], bool] | None = None,
        collective: GroupCollective | None = None,
        store_shards: Callable[[str, Path, dict[str, dict[str, Any]]], None] | None = None,
    ) -> None:
        check_retention(keep_last, keep_best, monitor, mode)
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointConfigError(f"{self.directory} exists and is not a directory; choose another path")
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.monitor = monitor
        self.mode = mode
        self.background = background
        self.on_commit = on_commit
        self.may_delete = may_delete
        self.collective = collective
        self.store_shards = store_shards
        self._buffers = SnapshotBuffers()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ saving

    def save(
        self,
        parts: Mapping[str, Any],
        *,
        epoch: int,
        iteration: int,
        metrics: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        sharded: Mapping[str, Any] | None = None,
    ) -> str:
        """Snapshot ``parts`` to CPU memory and commit them as a checkpoint (in the background by default).

        Waits for a save still in flight first (saves never interleave) and re-raises its error, if it had one.

        Args:
            parts: part name -> tensors and plain data (e.g. ``{"model": model.state_dict(), ...}``).
            sharded: part name -> this rank's share (e.g. a sharded model's DTensor state dict): a sharded
                checkpoint (layout ``'dcp'``), which every rank saves together (each with its ``sharded``; the
                other arguments are rank 0's). Its tensors go to DCP's files, the rest to a plain part.
            epoch: the epoch the checkpoint resumes at.
            iteration: the global iteration the checkpoint resumes at.
            metrics: numbers recorded in the manifest; ``monitor`` is read from here.
            meta: other plain data recorded in the manifest.

        Returns:
            The checkpoint's directory name.

        Raises:
            CheckpointConfigError: a part holds something that is not tensors and plain data.
            CheckpointWriteError: the disk has less free space than the checkpoint needs (``errno`` ENOSPC, raised
                before anything is written), or the previous background save failed (its ``errno`` and cause).
        """
        self.wait()
        bad = [p for p in [*parts, *(sharded or {})] if not p or "/" in p or p.startswith(".") or p == SHARDED_REST]
        if bad:
            raise CheckpointConfigError(f"part names must be non-empty file names, got {bad}")
        clean_metrics = {k: m for k, v in (metrics or {}).items() if (m := _fmt_metric(v)) is not None}
        name = f"ckpt-e{epoch:04d}-i{iteration:09d}"
        if sharded is not None:
            return self._save_sharded(parts, sharded, name, int(epoch), int(iteration), clean_metrics, meta)
        snapshot = {name: self._buffers.snapshot(value, name) for name, value in parts.items()}
        check_room(self.directory, checkpoint_bytes(snapshot))  # counted generously: data and file overhead
        job = (snapshot, name, int(epoch), int(iteration), clean_metrics, check_plain(dict(meta or {}), "meta"))
        self._start(self._commit, job)
        return name

    def _start(self, commit: Callable[..., None], job: tuple[Any, ...]) -> None:
        """Run ``commit(*job)`` (``job[1]``: the checkpoint's name) on a background thread, or here."""
        if self.background:
            self._thread = threading.Thread(
                target=self._run, args=(commit, *job), name=f"checkpoint-{job[1]}", daemon=False
            )
            self._thread.start()
        else:
            commit(*job)

    def _new_tmp(self, name: str) -> Path:
        """A new hidden temporary folder for checkpoint ``name`` (a dead writer's old ones swept first)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.directory)
        tmp = self.directory / f".tmp-{name}-{uuid.uuid4().hex[:8]}{owner_tag()}"
        tmp.mkdir()
        return tmp

    def wait(self) -> None:
        """Block until the background save (if any) is committed; re-raise its error."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            code = getattr(error, "errno", None)
            hint = "; free some space or save elsewhere" if code == errno.ENOSPC else ""
            raise CheckpointWriteError(
                code,
                f"saving a checkpoint into {self.directory} failed: {error}{hint}. Earlier checkpoints are untouched",
            ) from error

    def close(self) -> None:
        """Wait for pending work; the manager can still be used afterwards."""
        self.wait()

    def _run(self, commit: Callable[..., None], *job: Any) -> None:
        try:
            commit(*job)
        except BaseException as err:  # handed to the training thread by wait()
            logger.error("checkpoint %s failed: %s", job[1], err)
            with self._lock:
                self._error = err

    def _commit(
        self,
        snapshot: dict[str, Any],
        name: str,
        epoch: int,
        iteration: int,
        metrics: dict[str, float],
        meta: dict[str, Any],
    ) -> None:
        start = time.perf_counter()
        tmp = self._new_tmp(name)
        try:
            write_manifest(tmp, name, epoch, iteration, metrics, write_parts(tmp, snapshot), meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint never stays (nor takes the space)
            raise
        self._publish(tmp, name, start)

    def _publish(self, tmp: Path, name: str, start: float) -> None:
        """Rename the complete temporary folder into place, then ``latest``; ``on_commit``; retention."""
        final = self.directory / name
        if final.exists():  # the same position saved again (e.g. iteration and epoch end coincide): replace it
            trash = trash_path(self.directory, name)
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(self.directory)
        atomic_write_bytes(self.directory / LATEST, pointer_bytes(name))
        logger.debug("committed checkpoint %s in %.3f s", final, time.perf_counter() - start)
        if self.on_commit is not None:
            self.on_commit(CheckpointInfo.read(final))
        self._apply_retention(name)

    def _apply_retention(self, newest: str) -> None:
        if self.keep_last is None and not self.keep_best:
            return
        infos = self.list(verify=False)
        keep = retained(infos, newest, self.keep_last, self.keep_best, self.monitor, self.mode)
        for info in infos:
            if info.name not in keep:
                if self.may_delete is not None and not self.may_delete(info):
                    logger.debug("retention keeps %s for now: may_delete says not yet", info.name)
                    continue
                retire(info.path)
                logger.debug("retention removed %s", info.path)

    # ------------------------------------------------------------------ reading

    def list(self, *, verify: bool = False) -> list[CheckpointInfo]:
        """Committed checkpoints, oldest first (by iteration, then creation time).

        Args:
            verify: drop checkpoints whose files fail their checksums.
        """
        if not self.directory.is_dir():
            return []
        infos = []
        for entry in self.directory.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                info = CheckpointInfo.read(entry)
                if verify:
                    self.verify(info)
            except CheckpointCorruptError:
                continue
            infos.append(info)
        infos.sort(key=lambda i: (i.iteration, i.epoch, i.created))
        return infos

    def damage(self) -> builtins.list[str]:
        """For every committed checkpoint that fails :meth:`verify`, what is wrong with it (oldest first)."""
        found = []
        for info in self.list():
            try:
                self.verify(info)
            except CheckpointCorruptError as err:
                found.append(str(err))
        return found

    def latest_name(self) -> str | None:
        """What the ``latest`` pointer names (not verified), or ``None`` when there is none.

        Raises:
            CheckpointCorruptError: the pointer is damaged (not UTF-8, or not a plain checkpoint name).
        """
        path = self.directory / LATEST
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return read_pointer(data, path)

    @staticmethod
    def verify(info: CheckpointInfo) -> None:
        """:meth:`CheckpointInfo.verify`: every part's file has the manifest's size and SHA-256."""
        info.verify()

    def adopt(self, name: str) -> CheckpointInfo:
        """Make checkpoint ``name`` (a folder copied into this directory, e.g. downloaded from a bucket) the
        ``latest``: its files are verified first, so a partial copy never becomes the resume point.

        Raises:
            CheckpointCorruptError: the copy is incomplete or damaged (``latest`` is left as it was).
        """
        info = CheckpointInfo.read(self.directory / check_name(name, "adopt()"))
        info.verify()
        atomic_write_bytes(self.directory / LATEST, pointer_bytes(name))
        fsync_dir(self.directory)
        return info

    def candidates(self) -> builtins.list[CheckpointInfo]:
        """Committed checkpoints to try when resuming, best first: the ``latest`` pointer's, then newest to oldest."""
        infos = self.list()
        try:
            pointer = self.latest_name()
        except CheckpointCorruptError as err:
            logger.warning("%s; trying the committed checkpoints newest first", err)
            pointer = None
        ordered = [i for i in infos if i.name == pointer] + [i for i in reversed(infos) if i.name != pointer]
        if pointer is not None and (not ordered or ordered[0].name != pointer):
            try:
                CheckpointInfo.read(self.directory / pointer)
                problem = "is not a committed checkpoint"
            except CheckpointCorruptError as err:
                problem = f"is damaged: {err}"
            following = f"falling back to {ordered[0].name}" if ordered else "no other checkpoint"
            logger.warning("latest names %s, which %s; %s", pointer, problem, following)
        return ordered

    def load(
        self,
        checkpoint: str | os.PathLike[str] | CheckpointInfo | None = None,
        *,
        required: Iterable[str] = (),
        allow_partial: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> LoadedCheckpoint:
        """Verify and load a checkpoint: the given one, or the newest good one with fallback.

        Args:
            checkpoint: ``None`` for the newest valid checkpoint (``latest`` first, then older ones, each damaged one
                skipped with a warning); a checkpoint name or path, or a :class:`CheckpointInfo`, for exactly that one.
            required: part names the caller needs.
            allow_partial: load even when some ``required`` parts are missing.
            map_location: where tensors are loaded.

        Raises:
            CheckpointNotFoundError: no committed, undamaged checkpoint.
            CheckpointCorruptError: the explicitly named checkpoint is damaged.
            CheckpointIncompatibleError: a required part is missing and ``allow_partial`` is False.
        """
        self.wait()
        if checkpoint is not None:
            if isinstance(checkpoint, CheckpointInfo):
                info = checkpoint
            else:
                path = Path(checkpoint)
                info = CheckpointInfo.read(path if path.is_absolute() or path.exists() else self.directory / path)
            self.verify(info)
            return load_parts(info, required, allow_partial, map_location)
        damage: builtins.list[str] = []
        for _ in range(3):  # a candidate that vanished meanwhile (another process's retention): list again
            candidates, vanished = self.candidates(), False
            for i, info in enumerate(candidates):
                try:
                    self.verify(info)
                    return load_parts(info, required, allow_partial, map_location)
                except CheckpointCorruptError as err:
                    if not info.path.exists():
                        vanished = True
                        break
                    following = candidates[i + 1].name if i + 1 < len(candidates) else None
                    logger.warning("%s; %s", err, f"falling back to {following}" if following else "no older one")
                    damage.append(str(err))
            if not vanished:
                break
        if not damage:
            raise CheckpointNotFoundError(f"no committed checkpoint in {self.directory}")
        raise CheckpointNotFoundError(damaged_message(self.directory, damage))
