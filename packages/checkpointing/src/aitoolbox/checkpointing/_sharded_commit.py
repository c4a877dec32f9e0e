"""The sharded commit of :class:`~aitoolbox.checkpointing.manager.CheckpointManager` (every rank writes its share),
kept apart from the plain one: a mixin of the manager."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aitoolbox.checkpointing._fs import check_room
from aitoolbox.checkpointing.errors import CheckpointWriteError
from aitoolbox.checkpointing.layout import SHARDED_REST, checkpoint_bytes, write_manifest, write_parts
from aitoolbox.checkpointing.sharded import (
    SHARDS,
    GroupCollective,
    finish_shards,
    invisible_ranks,
    shard_bytes,
    shard_rank,
    split_tensors,
    start_shards,
)
from aitoolbox.checkpointing.snapshot import SnapshotBuffers, check_plain


class ShardedCommit:
    """Saving a checkpoint whose sharded parts every rank writes (layout ``'dcp'``)."""

    directory: Path
    background: bool
    collective: GroupCollective | None
    store_shards: Callable[[str, Path, dict[str, dict[str, Any]]], None] | None
    _buffers: SnapshotBuffers
    _thread: threading.Thread | None
    _start: Callable[[Callable[..., None], tuple[Any, ...]], None]
    _new_tmp: Callable[[str], Path]
    _publish: Callable[[Path, str, float], None]

    def _save_sharded(
        self,
        parts: Mapping[str, Any],
        sharded: Mapping[str, Any],
        name: str,
        epoch: int,
        iteration: int,
        metrics: dict[str, float],
        meta: Mapping[str, Any] | None,
    ) -> str:
        """Every rank: rank 0 makes the temporary folder and names it to the others; each rank starts writing its
        share (DCP; in the background only the copy to CPU memory blocks); the commit finishes in
        :meth:`_commit_sharded`."""
        coll = self.collective
        main = coll is None or coll.rank == 0
        world = 1 if coll is None else coll.world_size
        split = {part: split_tensors(value) for part, value in sharded.items()}
        tensors = {part: t or {} for part, (t, _) in split.items()}
        tmp_name: str | None = None
        job_parts: dict[str, Any] = {}
        error: BaseException | None = None
        if main:
            try:
                job_parts = {part: self._buffers.snapshot(value, part) for part, value in parts.items()}
                job_parts[SHARDED_REST] = check_plain({part: r for part, (_, r) in split.items()}, "sharded")
                check_room(self.directory, checkpoint_bytes(job_parts) + 2 * world * shard_bytes(tensors))
                tmp = self._new_tmp(name)
                (tmp / SHARDS).mkdir()
                tmp_name = tmp.name
            except BaseException as err:  # told to the other ranks (None), raised here
                error = err
        if coll is not None:
            tmp_name = coll.broadcast(tmp_name)
        if tmp_name is None:
            if error is not None:
                raise error
            raise CheckpointWriteError(None, f"rank 0 could not start checkpoint {name} in {self.directory}")
        tmp = self.directory / tmp_name
        try:
            pending = start_shards(tmp / SHARDS, tensors, coll, background=self.background)
        except BaseException:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        job = (tmp, name, epoch, iteration, metrics, check_plain(dict(meta or {}), "meta"), job_parts, pending, world)
        self._start(self._commit_sharded, job)
        return name

    def _commit_sharded(
        self,
        tmp: Path,
        name: str,
        epoch: int,
        iteration: int,
        metrics: dict[str, float],
        meta: dict[str, Any],
        parts: dict[str, Any],
        pending: Any,
        world: int,
    ) -> None:
        """Every rank: its share written and hashed, the lists gathered; rank 0: the plain parts, the manifest
        listing every file, then the rename and ``latest``."""
        start = time.perf_counter()
        main = self.collective is None or self.collective.rank == 0
        try:
            own, shards = finish_shards(tmp / SHARDS, self.collective, pending)
            elsewhere = self._place_invisible_shards(tmp, name, own, shards)
            if not main:
                return
            assert shards is not None
            sharded = {"parts": sorted(parts[SHARDED_REST]), "files": shards, "elsewhere": elsewhere}
            files = write_parts(tmp, parts)
            write_manifest(
                tmp, name, epoch, iteration, metrics, files, meta, layout="dcp", world_size=world, sharded=sharded
            )
        except BaseException:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._publish(tmp, name, start)

    def _place_invisible_shards(
        self, tmp: Path, name: str, own: dict[str, dict[str, Any]], shards: dict[str, dict[str, Any]] | None
    ) -> list[str]:
        """Every rank: rank 0 names the ranks whose shards it cannot see (no shared filesystem); those store theirs
        (:attr:`store_shards`) and drop their local copy; every rank learns whether all succeeded. Returns, on rank
        0, the files stored elsewhere."""
        coll = self.collective
        if coll is None or coll.world_size == 1:
            return []
        invisible = invisible_ranks(tmp / SHARDS, shards) if shards is not None else None
        invisible = coll.broadcast(invisible)
        problem = None
        if coll.rank in invisible:
            try:
                if self.store_shards is None:
                    raise CheckpointWriteError(
                        None,
                        f"rank {coll.rank}'s shards of {name} are not visible to rank 0 (no shared filesystem): "
                        "give the checkpoints a folder every machine shares, or a cloud mirror (cloud_save_mode='s3')",
                    )
                self.store_shards(name, tmp / SHARDS, own)
                shutil.rmtree(tmp, ignore_errors=True)  # not a checkpoint on this machine: its files are stored
            except Exception as err:  # every rank hears of it below
                problem = f"rank {coll.rank}: {err}"
        problems = [p for p in coll.gather(problem) if p]
        if problems:
            raise CheckpointWriteError(None, f"checkpoint {name} is not committed: {'; '.join(problems)}")
        return sorted(f for f in (shards or {}) if shard_rank(f) in invisible)
