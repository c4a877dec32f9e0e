"""The cloud mirror of an experiment folder (an extension): what is uploaded, in which order, and resuming from a
bucket. The bucket holds ``<cloud_dir_prefix>/<project>/<experiment folder name>/...``, as the folder does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitoolbox.checkpointing import CheckpointCorruptError, CheckpointInfo, CheckpointManager
from aitoolbox.checkpointing.layout import LATEST, MANIFEST, pointer_bytes, read_pointer
from aitoolbox.checkpointing.sharded import SHARDS
from aitoolbox.experiment import ExperimentWriter
from aitoolbox.loop import TrainLoop
from aitoolbox.loop.extensions import LoopExtension
from aitoolbox.loop.preemption import Preempted
from aitoolbox.torchtrain._composition.experiment import CHECKPOINT_DIR, ExperimentFolder, is_experiment_name

if TYPE_CHECKING:
    from aitoolbox.cloud import S3Store, UploadReport
    from aitoolbox.cloud.mirror import FolderMirror
    from aitoolbox.cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def cloud_settings(
    mode: object, bucket_name: object, prefix: object, options: Mapping[str, Any] | None
) -> CloudSettings:
    """The variants' cloud arguments, checked by the cloud package (:class:`~aitoolbox.cloud.settings.CloudSettings`,
    which owns the option names and raises :class:`~aitoolbox.cloud.CloudConfigError`)."""
    from aitoolbox.cloud.settings import CloudSettings

    return CloudSettings(mode, bucket_name, prefix, options)


def make_store(mode: str, bucket_name: object, prefix: object, options: Mapping[str, Any] | None) -> S3Store:
    return cloud_settings(mode, bucket_name, prefix, options).make_store()


class CloudMirror(LoopExtension[TrainLoop]):
    """Uploads the experiment folder as it is written: checkpoints as they commit (files, manifest, then the
    ``latest`` pointer), the rest at the end; waits for the uploads when training ends or fails."""

    def __init__(self, settings: CloudSettings, folder: ExperimentFolder) -> None:
        self.settings = settings
        self.folder = folder
        self.store: S3Store | None = None
        self._shard_store: S3Store | None = None  # another rank's, for its shards only
        self.mirror: FolderMirror | None = None
        self.report: UploadReport | None = None
        folder.listeners.append(self._follow)

    def attach(self, loop: TrainLoop) -> None:
        # checked now, before any training: name, credentials, bucket, write (by the process that uploads: rank 0)
        if self.settings.enabled and loop.is_main_process:
            self.store = self.settings.make_store()

    def _follow(self, path: Path, resumed: bool) -> None:
        if self.store is None or (self.mirror is not None and self.mirror.folder == path):
            return
        self.mirror = self.settings.make_mirror(self.store, path, f"{self.folder.project_name}/{path.name}")
        if resumed:
            self.mirror.resume_pending()
        else:
            self.mirror.upload([path / ExperimentWriter.HYPERPARAMS])

    def _rank_store(self) -> S3Store:
        """The store, on any rank: rank 0's mirror store, or one made (with its preflight) on first use by another
        rank, which never mirrors the folder itself."""
        if self.store is not None:
            return self.store
        if self._shard_store is None:
            self._shard_store = self.settings.make_store()
        return self._shard_store

    def _checkpoint_key(self, experiment_dir: Path, name: str, relative: str) -> str:
        base = f"{self.folder.project_name}/{experiment_dir.name}/{CHECKPOINT_DIR}/{name}"
        return self._rank_store().key(f"{base}/{relative}")

    def store_shards(self, name: str, folder: Path, files: Mapping[str, Any]) -> None:
        """On a rank whose machine shares no folder with rank 0: upload its shard files of checkpoint ``name`` (each
        verified by the store) before rank 0 commits the checkpoint; raises if one fails (nothing is committed)."""
        assert self.folder.path is not None
        store = self._rank_store()
        for file in files:
            store.upload_file(folder / file, self._checkpoint_key(self.folder.path, name, f"{SHARDS}/{file}"))
        logger.info(
            "cloud: uploaded %d shard file(s) of %s from this machine (no folder shared with rank 0)", len(files), name
        )

    def fetch_missing(self, experiment_dir: Path, name: str) -> None:
        """Download what this machine lacks of checkpoint ``name`` (its manifest, or files stored by the ranks of
        other machines); nothing when the folder is complete here (a shared filesystem). What cannot be fetched is
        logged, and loading goes on with what is here (verified, falling back as usual)."""
        from aitoolbox.cloud.errors import CloudError

        local = experiment_dir / CHECKPOINT_DIR / name
        try:
            if not (local / MANIFEST).is_file():
                self._rank_store().download_file(self._checkpoint_key(experiment_dir, name, MANIFEST), local / MANIFEST)
            missing = [
                (path, path.relative_to(local).as_posix())
                for _, path, entry in CheckpointInfo.read(local).files()  # names checked by read()
                if not path.is_file() or path.stat().st_size != entry["bytes"]
            ]
            for path, relative in missing:  # the store is made (and checked) only when something is missing
                self._rank_store().download_file(self._checkpoint_key(experiment_dir, name, relative), path)
        except (CloudError, CheckpointCorruptError) as err:
            logger.warning("cloud: could not fetch checkpoint %s from the bucket (%s); loading what is here", name, err)
            return
        if missing:
            logger.info("cloud: fetched %d file(s) of %s that this machine lacked", len(missing), name)

    def upload_checkpoint(self, info: CheckpointInfo) -> None:
        """Its files, then its manifest, then the ``latest`` pointer naming it (captured now, not read later)."""
        assert self.mirror is not None
        pointer = (info.path.parent / LATEST, pointer_bytes(info.name))
        self.mirror.upload(*info.commit_stages(), [pointer], tag=info.name)

    def checkpoint_uploaded(self, info: CheckpointInfo) -> bool:
        assert self.mirror is not None
        return self.mirror.settled([p for stage in info.commit_stages() for p in stage])

    def upload_first(self, name: str, keep: set[str]) -> None:
        """Upload checkpoint ``name`` next; drop the queued uploads of checkpoints not in ``keep`` (what retention
        kept)."""
        if self.mirror is not None:
            self.mirror.uploader.promote(name, drop=lambda tag: tag is not None and tag not in keep)

    def checkpoint_durable(self, info: CheckpointInfo) -> bool:
        """Whether every file of the checkpoint and the pointer naming it are in the bucket."""
        assert self.mirror is not None
        files = [p for stage in info.commit_stages() for p in stage] + [info.path.parent / LATEST]
        return self.mirror.uploaded(files)

    def upload_experiment(self) -> None:
        """Everything but the checkpoints (uploaded as they commit) and hidden files; ``summary.md`` last."""
        if self.mirror is not None:
            self.mirror.upload_folder(skip={CHECKPOINT_DIR}, last={ExperimentWriter.SUMMARY})

    def _finish(self, timeout: float | None = None) -> None:
        if self.mirror is not None:
            self.report = self.mirror.finish(timeout)

    def after_fit(self, loop: TrainLoop) -> None:
        self._finish()

    def on_error(self, loop: TrainLoop, error: BaseException) -> None:
        # what was committed goes up if it can quickly; the rest stays in the journal. Ctrl-C twice: no wait at all
        self._finish(timeout=0.0 if isinstance(error, KeyboardInterrupt) else 30.0)

    def on_preempt(self, loop: TrainLoop, preempted: Preempted) -> None:
        """Upload within what is left of the grace period (newest checkpoint first: promoted by the checkpointing);
        say loudly when the newest checkpoint is not in the bucket yet."""
        mirror = self.mirror
        if mirror is None:
            return
        while preempted.remaining_s() > 0 and not mirror.uploader.wait_idle(min(preempted.remaining_s(), 0.25)):
            pass  # short waits: a second signal brings the deadline closer
        self.report = mirror.finish(timeout=0)
        preempted.durable = self.report.ok
        ckpt = preempted.checkpoint
        if ckpt is not None and not self.checkpoint_durable(CheckpointInfo.read(ckpt)):
            preempted.durable = False
            logger.critical(
                "cloud: the preemption checkpoint %s is NOT in %s yet (the grace period ran out); it is kept locally "
                "and listed in %s: resume on this machine to upload it, or copy the folder",
                ckpt.name,
                mirror.store.url(mirror.key(ckpt)),
                mirror.uploader.journal_path,
            )

    def export_run(self, loop: TrainLoop) -> UploadReport | None:
        return self.report

    def import_run(self, loop: TrainLoop, data: UploadReport | None) -> None:
        self.report = data


def download_latest_checkpoint(store: S3Store, root: Path, project_name: str, experiment_name: str) -> Path | None:
    """Find the newest experiment of this name in the bucket and download its newest checkpoint under ``root``; it
    becomes the local ``latest`` once verified. ``None`` when the bucket holds no checkpoint of this experiment.

    Every name read from the bucket (the experiment folder in a key, the pointer's checkpoint name, each file the
    manifest lists) must be one plain folder entry: a hostile or damaged bucket cannot write outside ``root``; only
    the files the manifest lists are downloaded.

    Raises:
        CheckpointCorruptError: a name read from the bucket would resolve outside its folder (it is named).
    """
    project_key = store.key(f"{project_name}/")
    suffix = f"/{CHECKPOINT_DIR}/{LATEST}"
    pointers = []
    for obj in store.list(store.key(f"{project_name}/{experiment_name}_")):
        exp_name = obj.key[len(project_key) : -len(suffix)] if obj.key.endswith(suffix) else ""
        if is_experiment_name(exp_name, experiment_name):  # one folder entry of this experiment; others ignored
            pointers.append((obj, exp_name))
    if not pointers:
        return None
    newest, exp_name = max(pointers, key=lambda p: p[0].last_modified)
    ckpt_dir_key = newest.key[: -len(LATEST)]
    name = read_pointer(store.read_bytes(newest.key), store.url(newest.key))
    if name is None:
        return None
    local_ckpt = root / project_name / exp_name / CHECKPOINT_DIR / name
    store.download_file(f"{ckpt_dir_key}{name}/{MANIFEST}", local_ckpt / MANIFEST)
    for _, path, _ in CheckpointInfo.read(local_ckpt).files():  # the file names are checked by read()
        relative = path.relative_to(local_ckpt).as_posix()  # a part's file, or shards/<file>
        store.download_file(f"{ckpt_dir_key}{name}/{relative}", path)
    local_exp = root / project_name / exp_name
    hyper = store.key(f"{project_name}/{exp_name}/{ExperimentWriter.HYPERPARAMS}")
    if store.exists(hyper):
        store.download_file(hyper, local_exp / ExperimentWriter.HYPERPARAMS)
    CheckpointManager(local_exp / CHECKPOINT_DIR).adopt(name)
    logger.info("cloud: downloaded checkpoint %s of %s from %s", name, exp_name, store.url(ckpt_dir_key))
    return local_exp
