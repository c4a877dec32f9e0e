"""BackgroundUploader: ordered, journaled, retried uploads that never lose or touch a local file."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aitoolbox.cloud._items import Group, UploadItem, UploadReport, check_number
from aitoolbox.cloud.errors import CloudAuthError, CloudConfigError, CloudError, CloudNotFoundError
from aitoolbox.cloud.store import S3Store

__all__ = ["BackgroundUploader", "UploadItem", "UploadReport"]

logger = logging.getLogger(__name__)


class BackgroundUploader:
    """Upload groups of files in order on a background thread, with retries, a journal and a final report.

    A *group* is a list of *stages*; the files of a stage upload before those of the next (e.g. a checkpoint's
    files, then its manifest, then the ``latest`` pointer). Groups upload in submission order. If a file fails after
    every retry, the rest of its group is not uploaded (a pointer must never name missing files); the failures and
    everything not uploaded stay in the journal, a JSON-lines file on local disk, and :meth:`resume_pending` (called
    when an experiment is resumed) uploads them. The local files are only read, never changed or deleted.

    Args:
        store: where to upload.
        journal_path: the journal file (created if missing).
        max_attempts: tries per file, with exponential backoff and jitter between them.
        backoff_s: the first delay; it doubles up to ``max_backoff_s``.
        queue_size: groups that may wait; :meth:`submit` blocks beyond that (training waits instead of using memory).

    Example:
        .. code-block:: python

            up = BackgroundUploader(store, "exp/.cloud_journal.jsonl")
            up.submit([[UploadItem.file("ckpt/model.pt", "exp/ckpt/model.pt")],
                       [UploadItem.file("ckpt/manifest.json", "exp/ckpt/manifest.json")]])
            report = up.flush(timeout=600)
    """

    def __init__(
        self,
        store: S3Store,
        journal_path: str | os.PathLike[str],
        *,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        queue_size: int = 64,
    ) -> None:
        self.check_options(
            max_attempts=max_attempts, backoff_s=backoff_s, max_backoff_s=max_backoff_s, queue_size=queue_size
        )
        self.store = store
        self.journal_path = Path(journal_path)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.queue_size = queue_size
        self._groups: deque[Group] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)  # a group queued or taken, or the worker told to stop
        self._stopping = False
        self._outstanding = 0
        self._report = UploadReport(journal=str(self.journal_path))
        self._thread: threading.Thread | None = None
        self._closed = False
        self._done_keys: set[str] = set()
        self._settled_keys: set[str] = set()  # uploaded, or dropped on purpose: nothing will upload them any more

    @staticmethod
    def check_options(
        *, max_attempts: object = 8, backoff_s: object = 0.5, max_backoff_s: object = 30.0, queue_size: object = 64
    ) -> None:
        """Check the options before anything runs (a bad one would otherwise stop the upload thread later).

        Raises:
            CloudConfigError: naming the option, the value and what it must be.
        """
        check_number("max_attempts", max_attempts, minimum=1, integer=True)
        check_number("backoff_s", backoff_s, minimum=0.0)
        check_number("max_backoff_s", max_backoff_s, minimum=0.0)
        check_number("queue_size", queue_size, minimum=1, integer=True)

    # ------------------------------------------------------------------ journal

    def _journal(self, *records: dict[str, Any]) -> None:
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _read_journal(self) -> list[dict[str, Any]]:
        if not self.journal_path.exists():
            return []
        records = []
        for line in self.journal_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash: its item was not acknowledged, so it is still "add" elsewhere
        return records

    def pending_in_journal(self) -> list[dict[str, Any]]:
        """Journal entries added but not uploaded, in submission order."""
        records = self._read_journal()
        done = {r["id"] for r in records if r.get("op") in ("done", "drop")}
        return [r for r in records if r.get("op") == "add" and r["id"] not in done]

    # ------------------------------------------------------------------ submission

    def submit(self, stages: Sequence[Sequence[UploadItem]], *, tag: str | None = None) -> None:
        """Queue a group: its stages upload in order, after every group submitted before it (unless a later one is
        promoted). ``tag`` names the group for :meth:`promote` (e.g. the checkpoint it uploads)."""
        if self._closed:
            raise CloudError("the uploader is closed")
        stages = [list(s) for s in stages if s]
        if not stages:
            return
        group = uuid.uuid4().hex
        plan = []
        records = []
        for s, stage in enumerate(stages):
            ids = []
            for item in stage:
                item_id = uuid.uuid4().hex
                record: dict[str, Any] = {"op": "add", "id": item_id, "group": group, "stage": s, "key": item.key}
                if item.data is not None:
                    record["data"] = base64.b64encode(item.data).decode()
                else:
                    record["path"] = item.path
                if tag is not None:
                    record["tag"] = tag
                if item.volatile:
                    record["volatile"] = True
                records.append(record)
                ids.append((item_id, item))
            plan.append(ids)
        self._journal(*records)
        self._enqueue(Group(plan, tag))

    def _enqueue(self, group: Group) -> None:
        with self._lock:
            while len(self._groups) >= self.queue_size:  # training waits instead of using memory
                self._changed.wait()
            self._outstanding += 1
            self._groups.append(group)
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aitoolbox-uploader", daemon=True)
                self._thread.start()

    def resume_pending(self, check: Callable[[UploadItem], str | None] | None = None) -> int:
        """Re-queue what the journal lists as not uploaded (e.g. after a crash); returns the number of files.

        Args:
            check: called with each pending item before anything is queued; a string it returns says why the item
                must not be uploaded (e.g. a file outside the mirrored folder: a tampered journal).

        Raises:
            CloudConfigError: ``check`` refused an item (named, with the journal); nothing was queued.
        """
        records = self._read_journal()
        added = {r["id"]: r["key"] for r in records if r.get("op") == "add"}
        with self._lock:  # uploaded (or dropped) by an earlier run: retention may delete their local files
            settled = (added[r["id"]] for r in records if r.get("op") in ("done", "drop") and r["id"] in added)
            self._settled_keys.update(settled)
        pending = self.pending_in_journal()
        groups: dict[str, tuple[str | None, dict[int, list[tuple[str, UploadItem]]]]] = {}
        for r in pending:
            item = self._item_of(r)
            refused = check(item) if check is not None else None
            if refused is not None:
                raise CloudConfigError(
                    f"the upload journal {self.journal_path} lists {item.path or item.key!r}, which is refused: "
                    f"{refused}. The journal was changed by hand or is damaged; delete it to start a clean mirror"
                )
            groups.setdefault(r["group"], (r.get("tag"), {}))[1].setdefault(int(r["stage"]), []).append((r["id"], item))
        for tag, stages in groups.values():
            self._enqueue(Group([stages[s] for s in sorted(stages)], tag))
        if pending:
            logger.info("re-queued %d pending uploads from %s", len(pending), self.journal_path)
        return len(pending)

    def _item_of(self, record: dict[str, Any]) -> UploadItem:
        """The item a journal record adds; a record that is not one (a damaged journal) is named."""
        try:
            data = base64.b64decode(record["data"], validate=True) if "data" in record else None
            key, path = record["key"], record.get("path")
            if (
                not isinstance(key, str)
                or (path is not None and not isinstance(path, str))
                or (path is None) == (data is None)
            ):
                raise TypeError("needs a key and either a path or data")
            int(record["stage"])
            str(record["group"])
        except (KeyError, TypeError, ValueError) as err:
            raise CloudConfigError(
                f"the upload journal {self.journal_path} has a damaged entry {record!r} ({err}); delete the journal "
                "to start a clean mirror"
            ) from err
        return UploadItem(key=key, path=path, data=data, volatile=bool(record.get("volatile")))

    def promote(self, tag: str, drop: Callable[[str | None], bool] = lambda tag: False) -> int:
        """Upload the queued group tagged ``tag`` next (the newest checkpoint first, when time is short): the
        ``volatile`` items of the groups it overtakes are dropped (an older ``latest`` pointer must not land after
        the newer one), and so are the queued groups whose tag ``drop`` accepts. Dropped items are recorded in the
        journal as settled (not uploaded again on resume). Returns the number of items dropped."""
        with self._lock:
            found = [g for g in self._groups if g.tag == tag]
            if not found:
                return 0
            promoted = found[-1]
            dropped: list[str] = []
            kept: deque[Group] = deque([promoted])
            for group in self._groups:
                if group is promoted:
                    continue
                if drop(group.tag):
                    dropped += [item_id for stage in group.stages for item_id, _ in stage]
                    self._settled_keys.update(item.key for stage in group.stages for _, item in stage)
                    self._outstanding -= 1
                    continue
                for stage in group.stages:
                    dropped += [item_id for item_id, item in stage if item.volatile]
                    stage[:] = [(i, item) for i, item in stage if not item.volatile]
                group.stages = [stage for stage in group.stages if stage]
                kept.append(group)
            self._groups = kept
            self._report.dropped += len(dropped)
            self._idle.notify_all()
        if dropped:
            self._journal(*({"op": "drop", "id": item_id} for item_id in dropped))
        return len(dropped)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._groups and not self._stopping:
                    self._changed.wait()
                if not self._groups:
                    return
                group = self._groups.popleft()
                self._changed.notify_all()
            try:
                self._upload_group(group.stages)
            finally:
                with self._lock:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def _upload_group(self, plan: list[list[tuple[str, UploadItem]]]) -> None:
        for s, stage in enumerate(plan):
            for item_id, item in stage:
                error = self._upload_with_retries(item)
                if error is not None:
                    skipped = [i.key for st in plan[s:] for _, i in st if i is not item]
                    with self._lock:
                        self._report.failed.append((item.key, error))
                    logger.error(
                        "upload of %s failed (%s); %d later files of its group wait for it in %s",
                        item.key,
                        error,
                        len(skipped),
                        self.journal_path,
                    )
                    return
                self._journal({"op": "done", "id": item_id})
                with self._lock:
                    self._done_keys.add(item.key)
                    self._settled_keys.add(item.key)

    def _upload_with_retries(self, item: UploadItem) -> str | None:
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                if item.data is not None:
                    size = self.store.upload_bytes(item.data, item.key)
                else:
                    assert item.path is not None
                    if not Path(item.path).exists():
                        return f"local file {item.path} no longer exists"
                    size = self.store.upload_file(item.path, item.key)
            except (CloudAuthError, CloudNotFoundError) as err:
                return str(err)  # retrying cannot help
            except (CloudError, OSError) as err:
                if attempt == self.max_attempts:
                    return f"{type(err).__name__}: {err}"
                logger.warning("upload of %s failed (attempt %d/%d): %s", item.key, attempt, self.max_attempts, err)
                time.sleep(min(delay, self.max_backoff_s) * (0.5 + random.random()))
                delay *= 2
                continue
            with self._lock:
                self._report.uploaded += 1
                self._report.uploaded_bytes += size
            logger.debug("uploaded %s (%d bytes)", item.key, size)
            return None
        return "no attempt made"

    def uploaded(self, keys: Sequence[str]) -> bool:
        """True when every key in ``keys`` has been uploaded by this uploader."""
        with self._lock:
            return all(k in self._done_keys for k in keys)

    def settled(self, keys: Sequence[str]) -> bool:
        """True when nothing will upload ``keys`` any more: uploaded, or dropped (by this run or, read from the
        journal on resume, an earlier one)."""
        with self._lock:
            return all(k in self._settled_keys for k in keys)

    # ------------------------------------------------------------------ flush

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` seconds) until nothing is queued or uploading; whether it is so."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._outstanding, timeout)

    def flush(self, timeout: float | None = None) -> UploadReport:
        """Wait (up to ``timeout`` seconds) for every queued group; report what was uploaded, failed, pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._outstanding:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._idle.wait(remaining)
            report = UploadReport(
                uploaded=self._report.uploaded,
                uploaded_bytes=self._report.uploaded_bytes,
                failed=list(self._report.failed),
                journal=str(self.journal_path),
                dropped=self._report.dropped,
            )
        failed_keys = {k for k, _ in report.failed}
        report.pending = [r["key"] for r in self.pending_in_journal() if r["key"] not in failed_keys]
        return report

    def close(self, timeout: float | None = None) -> UploadReport:
        """Flush, then stop the worker thread."""
        report = self.flush(timeout)
        self._closed = True
        if self._thread is not None and not self._outstanding:
            with self._lock:
                self._stopping = True
                self._changed.notify_all()
            self._thread.join(timeout=5)
            self._thread = None
        return report
