"""What the background uploader moves: an item (a file or a captured payload), a group of staged items, and the
report of a flush; plus the checks of its numeric options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from aitoolbox.cloud.errors import CloudConfigError

__all__ = ["Group", "UploadItem", "UploadReport", "check_number"]


def check_number(name: str, value: object, *, minimum: float, integer: bool = False) -> None:
    """A finite number (an int where ``integer``; never a bool) >= ``minimum``, checked before any thread starts."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum or value != value:
        expected = "an int" if integer else "a number"
        raise CloudConfigError(f"{name} must be {expected} >= {minimum}, got {value!r}")
    if not integer and value == float("inf"):
        raise CloudConfigError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class UploadItem:
    """One object to upload: a local file (read when it is uploaded) or a small payload captured now.

    ``volatile``: superseded by a later group's upload of the same key (e.g. a ``latest`` pointer); dropped when a
    later group is promoted ahead of this one (:meth:`BackgroundUploader.promote`)."""

    key: str
    path: str | None = None
    data: bytes | None = None
    volatile: bool = False

    @classmethod
    def file(cls, path: str | os.PathLike[str], key: str) -> UploadItem:
        return cls(key=key, path=str(path))

    @classmethod
    def payload(cls, data: bytes, key: str, *, volatile: bool = False) -> UploadItem:
        return cls(key=key, data=data, volatile=volatile)


@dataclass
class Group:
    """A submitted group: its stages of ``(journal id, item)``, and the tag it was submitted with."""

    stages: list[list[tuple[str, UploadItem]]]
    tag: str | None = None


@dataclass
class UploadReport:
    """What a flush found: uploaded so far, failed after every retry, and still pending (queued or journaled)."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    dropped: int = 0
    journal: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def __str__(self) -> str:
        text = f"{self.uploaded} files ({self.uploaded_bytes / 1e6:.1f} MB) uploaded"
        if self.failed:
            text += f"; {len(self.failed)} failed: " + ", ".join(f"{k} ({r})" for k, r in self.failed[:5])
        if self.dropped:
            text += f"; {self.dropped} superseded uploads dropped"
        if self.pending:
            text += f"; {len(self.pending)} still pending"
        if not self.ok and self.journal:
            text += f"; the local files are kept and listed in {self.journal}; they are uploaded on resume"
        return text
