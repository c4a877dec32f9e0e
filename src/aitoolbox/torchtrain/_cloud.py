"""Glue between the tracked variants and aitoolbox.cloud: what is uploaded, in which order, and resume from a bucket."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitoolbox.loop import LoopConfigError

if TYPE_CHECKING:
    from aitoolbox.checkpointing import CheckpointInfo
    from aitoolbox.cloud import BackgroundUploader, S3Store, UploadReport

logger = logging.getLogger(__name__)

GCS_ENDPOINT = "https://storage.googleapis.com"
JOURNAL = ".cloud_upload_journal.jsonl"
_STORE_OPTIONS = {"endpoint_url", "region", "profile", "part_size", "max_concurrency"}
_UPLOAD_OPTIONS = {"max_attempts", "backoff_s", "max_backoff_s"}
_OTHER_OPTIONS = {"create_bucket", "flush_timeout_s"}


def make_store(
    mode: str, bucket_name: object, cloud_dir_prefix: object, options: Mapping[str, Any] | None
) -> tuple[S3Store, dict[str, Any]]:
    """Build the store (bucket name checked, nothing sent), then run the preflight; returns it with its options."""
    from aitoolbox.cloud import S3Store, validate_bucket_name

    opts = dict(options or {})
    unknown = sorted(set(opts) - _STORE_OPTIONS - _UPLOAD_OPTIONS - _OTHER_OPTIONS)
    if unknown:
        allowed = sorted(_STORE_OPTIONS | _UPLOAD_OPTIONS | _OTHER_OPTIONS)
        raise LoopConfigError(f"cloud_options has unknown keys {unknown}; allowed: {allowed}")
    if bucket_name is None:
        raise LoopConfigError(f"cloud_save_mode={mode!r} needs bucket_name (the bucket to save to)")
    validate_bucket_name(bucket_name)
    if not isinstance(cloud_dir_prefix, str):
        raise LoopConfigError(f"cloud_dir_prefix must be a string, got {type(cloud_dir_prefix).__name__}")
    store_kwargs = {k: opts[k] for k in _STORE_OPTIONS if k in opts}
    if mode == "gcs":
        store_kwargs.setdefault("endpoint_url", GCS_ENDPOINT)  # GCS's S3-compatible XML API, with HMAC keys
        store_kwargs.setdefault("region", "auto")
    store = S3Store(str(bucket_name), prefix=cloud_dir_prefix, **store_kwargs)
    store.preflight(create_bucket=bool(opts.get("create_bucket", False)))
    logger.info("cloud: %s preflight passed", store)
    return store, opts


class ExperimentUploads:
    """Uploads one experiment folder to ``<cloud_dir_prefix>/<project>/<experiment folder name>/``."""

    def __init__(self, store: S3Store, experiment_dir: Path, project_name: str, options: Mapping[str, Any]) -> None:
        from aitoolbox.cloud import BackgroundUploader

        self.store = store
        self.experiment_dir = experiment_dir
        self.base = f"{project_name}/{experiment_dir.name}"
        self.flush_timeout_s = float(options.get("flush_timeout_s", 600.0))
        upload_kwargs = {k: options[k] for k in _UPLOAD_OPTIONS if k in options}
        self.uploader: BackgroundUploader = BackgroundUploader(store, experiment_dir / JOURNAL, **upload_kwargs)

    def key(self, path: Path) -> str:
        return self.store.key(f"{self.base}/{path.relative_to(self.experiment_dir).as_posix()}")

    def upload_files(self, *stages: list[Path]) -> None:
        from aitoolbox.cloud import UploadItem

        self.uploader.submit([[UploadItem.file(p, self.key(p)) for p in stage] for stage in stages])

    def checkpoint_keys(self, info: CheckpointInfo) -> list[str]:
        return [self.key(info.path / e["file"]) for e in info.parts.values()] + [self.key(info.path / "manifest.json")]

    def upload_checkpoint(self, info: CheckpointInfo) -> None:
        """Its files, then its manifest, then the ``latest`` pointer naming it (captured now, not read later)."""
        from aitoolbox.cloud import UploadItem

        files = [UploadItem.file(info.path / e["file"], self.key(info.path / e["file"])) for e in info.parts.values()]
        manifest = [UploadItem.file(info.path / "manifest.json", self.key(info.path / "manifest.json"))]
        pointer = [UploadItem.payload((info.name + "\n").encode(), self.key(info.path.parent / "latest"))]
        self.uploader.submit([files, manifest, pointer])

    def checkpoint_uploaded(self, info: CheckpointInfo) -> bool:
        return self.uploader.uploaded(self.checkpoint_keys(info))

    def upload_experiment_files(self) -> None:
        """Everything but the checkpoints (uploaded as they commit) and hidden files; ``summary.md`` last."""
        files = [
            p
            for p in sorted(self.experiment_dir.rglob("*"))
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.experiment_dir).parts)
            and p.relative_to(self.experiment_dir).parts[0] != "checkpoint_model"
        ]
        summary = [p for p in files if p.name == "summary.md" and p.parent == self.experiment_dir]
        self.upload_files([p for p in files if p not in summary], summary)

    def finish(self, timeout: float | None = None) -> UploadReport:
        """Wait for the uploads (up to ``flush_timeout_s``, or less) and log a summary; failures stay in the journal."""
        limit = self.flush_timeout_s if timeout is None else min(timeout, self.flush_timeout_s)
        report = self.uploader.flush(limit)
        destination = self.store.url(self.store.key(self.base))
        if report.ok:
            logger.info("cloud: %s to %s", report, destination)
        else:
            logger.warning("cloud: NOT everything reached %s: %s", destination, report)
        return report


def download_latest_checkpoint(store: S3Store, root: Path, project_name: str, experiment_name: str) -> Path | None:
    """Find the newest experiment of this name in the bucket and download its newest checkpoint under ``root``.

    Returns the local experiment folder, or ``None`` when the bucket holds no checkpoint of this experiment.
    """
    prefix = store.key(f"{project_name}/{experiment_name}_")
    pointers = [o for o in store.list(prefix) if o.key.endswith("/checkpoint_model/latest")]
    if not pointers:
        return None
    newest = max(pointers, key=lambda o: o.last_modified)
    ckpt_dir_key = newest.key[: -len("latest")]
    name = store.read_bytes(newest.key).decode().strip()
    exp_name = ckpt_dir_key.rstrip("/").split("/")[-2]
    local_exp = root / project_name / exp_name
    local_ckpt = local_exp / "checkpoint_model"
    for obj in store.list(f"{ckpt_dir_key}{name}/"):
        store.download_file(obj.key, local_ckpt / name / obj.key.rsplit("/", 1)[1])
    hyper = store.key(f"{project_name}/{exp_name}/hyperparams.json")
    if store.exists(hyper):
        store.download_file(hyper, local_exp / "hyperparams.json")
    from aitoolbox.checkpointing._fs import atomic_write_bytes

    atomic_write_bytes(local_ckpt / "latest", (name + "\n").encode())
    logger.info("cloud: downloaded checkpoint %s of %s from %s", name, exp_name, store.url(ckpt_dir_key))
    return local_exp
