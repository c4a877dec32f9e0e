"""A local folder mirrored to a bucket in the background: files go up in stages (a stage starts once the previous one
is uploaded), through a journal, so that what a crash interrupted is uploaded again on the next run."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from aitoolbox.cloud.store import S3Store
from aitoolbox.cloud.uploader import BackgroundUploader, UploadItem, UploadReport

__all__ = ["FolderMirror"]

logger = logging.getLogger(__name__)

#: a file to upload, or ``(path, data)``: ``data`` uploaded to the key of ``path`` (e.g. a pointer captured now)
Upload = Path | tuple[Path, bytes]


class FolderMirror:
    """Mirror files of ``folder`` to ``<store prefix>/<remote_base>/<path relative to folder>``.

    Args:
        store: the bucket.
        folder: the local folder.
        remote_base: the key prefix under the store's prefix.
        journal: the journal's file name inside ``folder`` (hidden files are never uploaded).
        flush_timeout_s: how long :meth:`finish` waits at most.
        upload_options: ``max_attempts``, ``backoff_s``, ``max_backoff_s`` of :class:`BackgroundUploader`.
    """

    def __init__(
        self,
        store: S3Store,
        folder: Path,
        remote_base: str,
        *,
        journal: str = ".cloud_upload_journal.jsonl",
        flush_timeout_s: float = 600.0,
        **upload_options: Any,
    ) -> None:
        self.store = store
        self.folder = folder
        self.remote_base = remote_base
        self.flush_timeout_s = flush_timeout_s
        self.uploader = BackgroundUploader(store, folder / journal, **upload_options)

    def key(self, path: Path) -> str:
        return self.store.key(f"{self.remote_base}/{path.relative_to(self.folder).as_posix()}")

    def _item(self, upload: Upload) -> UploadItem:
        if isinstance(upload, tuple):  # captured now: a later group's capture of the same file supersedes it
            return UploadItem.payload(upload[1], self.key(upload[0]), volatile=True)
        return UploadItem.file(upload, self.key(upload))

    def upload(self, *stages: Sequence[Upload], tag: str | None = None) -> None:
        """Queue ``stages``: each starts once the previous one is uploaded (``tag``: see
        :meth:`BackgroundUploader.promote`)."""
        self.uploader.submit([[self._item(u) for u in stage] for stage in stages], tag=tag)

    def uploaded(self, paths: Sequence[Path]) -> bool:
        """Whether every one of ``paths`` is confirmed uploaded."""
        return self.uploader.uploaded([self.key(p) for p in paths])

    def settled(self, paths: Sequence[Path]) -> bool:
        """Whether nothing will upload ``paths`` any more (uploaded, or dropped as superseded)."""
        return self.uploader.settled([self.key(p) for p in paths])

    def upload_folder(self, *, skip: Collection[str] = (), last: Collection[str] = ()) -> None:
        """Every file of the folder but hidden ones and the top-level entries in ``skip``; the top-level files named
        in ``last`` go up after all the others (e.g. a summary that names them)."""
        files = []
        links = []
        for dirpath, dirnames, filenames in os.walk(self.folder):  # does not descend into linked folders
            top = Path(dirpath) == self.folder
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (top and d in skip))
            links += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            names = [f for f in sorted(filenames) if not f.startswith(".") and not (top and f in skip)]
            links += [Path(dirpath) / f for f in names if (Path(dirpath) / f).is_symlink()]
            files += [Path(dirpath) / f for f in names if not (Path(dirpath) / f).is_symlink()]
        if links:  # a link's target is outside what the folder holds: never uploaded
            logger.warning("cloud: not uploading %d symbolic link(s): %s", len(links), ", ".join(map(str, links[:5])))
        final = [p for p in files if p.parent == self.folder and p.name in last]
        self.upload([p for p in files if p not in final], final)

    def resume_pending(self) -> int:
        """Queue again what the journal says a previous run did not finish uploading: only files of this folder, to
        their keys under ``remote_base`` (a journal naming anything else is refused: :class:`CloudConfigError`)."""
        return self.uploader.resume_pending(check=self._check_item)

    def _check_item(self, item: UploadItem) -> str | None:
        """Why a journaled item must not be uploaded, or None: a file outside the folder (or a symlink), or a key
        outside this mirror's base."""
        base = self.store.key(f"{self.remote_base}/")
        if not item.key.startswith(base) or "/../" in f"/{item.key[len(base) :]}/":
            return f"its key {item.key!r} is not under {base!r}"
        if item.path is None:
            return None
        path = Path(item.path)
        if path.is_symlink():
            return "it is a symbolic link"
        try:
            relative = path.resolve().relative_to(self.folder.resolve())
        except ValueError:
            return f"it is outside the mirrored folder {self.folder}"
        if self.key(self.folder / relative) != item.key:
            return f"its key {item.key!r} is not the mirror's key for it"
        return None

    def finish(self, timeout: float | None = None) -> UploadReport:
        """Wait for the uploads (up to ``flush_timeout_s``, or less) and log a summary; failures stay in the journal."""
        limit = self.flush_timeout_s if timeout is None else min(timeout, self.flush_timeout_s)
        report = self.uploader.flush(limit)
        destination = self.store.url(self.store.key(self.remote_base))
        if report.ok:
            logger.info("cloud: %s to %s", report, destination)
        else:
            logger.warning("cloud: NOT everything reached %s: %s", destination, report)
        return report
