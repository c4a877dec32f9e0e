"""Cloud settings given as plain values (a mode, a bucket, a key prefix and one options mapping, as the TrainLoop
variants take them), checked before anything is sent, and the store they make.

The option names are not a copied list: they are the keyword options of the classes that take them
(:class:`~aitoolbox.cloud.S3Store`, its ``preflight``, :class:`~aitoolbox.cloud.BackgroundUploader` and
:class:`~aitoolbox.cloud.mirror.FolderMirror`), read from their signatures, so every option a class gains is
reachable here.

Example:
    >>> settings = CloudSettings("s3", "my-bucket", "runs", {"connect_timeout": 5, "max_attempts": 3})
    >>> settings.enabled, settings.store_options, settings.upload_options
    (True, {'connect_timeout': 5}, {'max_attempts': 3})
    >>> CloudSettings("s3", "my-bucket", "", {"endpoint": "x"})
    Traceback (most recent call last):
    ...
    aitoolbox.cloud.errors.CloudConfigError: cloud_options has unknown keys ['endpoint']; allowed: [...]

.. versionadded:: 0.4.1
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aitoolbox.cloud.bucket import validate_bucket_name
from aitoolbox.cloud.errors import CloudConfigError
from aitoolbox.cloud.mirror import FolderMirror
from aitoolbox.cloud.store import S3Store
from aitoolbox.cloud.uploader import BackgroundUploader

__all__ = ["GCS_ENDPOINT", "MODES", "OPTIONS", "CloudSettings"]

logger = logging.getLogger(__name__)

#: GCS's S3-compatible XML API (used with HMAC keys)
GCS_ENDPOINT = "https://storage.googleapis.com"
#: ``cloud_save_mode`` values: None and 'local' upload nothing
MODES = (None, "local", "s3", "gcs")


def _keyword_options(fn: Callable[..., Any], *, leave: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keyword-only parameters of ``fn`` (not ``**kwargs``), except ``leave``."""
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in leave)


_STORE = _keyword_options(S3Store.__init__, leave=("prefix",))  # the prefix is its own argument
_PREFLIGHT = _keyword_options(S3Store.preflight)
_UPLOAD = _keyword_options(BackgroundUploader.__init__)
_MIRROR = _keyword_options(FolderMirror.__init__, leave=("journal",))
#: every key ``cloud_options`` accepts, by what takes it
OPTIONS: dict[str, tuple[str, ...]] = {"store": _STORE, "preflight": _PREFLIGHT, "upload": _UPLOAD, "mirror": _MIRROR}


class CloudSettings:
    """A mode, a bucket, a key prefix and ``cloud_options``, checked now (nothing is sent).

    Args:
        mode: ``None``/``'local'`` (no uploads), ``'s3'`` or ``'gcs'`` (S3-compatible, at :data:`GCS_ENDPOINT`).
        bucket_name: the bucket (needed unless uploads are off).
        prefix: the key prefix in the bucket.
        options: keys of :data:`OPTIONS`: ``S3Store`` options (``endpoint_url``, ``region``, ``connect_timeout``...),
            ``create_bucket`` (preflight), uploader options (``max_attempts``, ``backoff_s``...) and
            ``flush_timeout_s`` (how long the end of training waits for its uploads).
        name: how ``options`` is called in messages.

    Raises:
        CloudConfigError: naming the setting, the bad value and what it must be.
    """

    def __init__(
        self,
        mode: object,
        bucket_name: object,
        prefix: object,
        options: Mapping[str, Any] | None,
        *,
        name: str = "cloud_options",
    ) -> None:
        if mode not in MODES:
            raise CloudConfigError(f"cloud_save_mode must be None, 'local', 's3' or 'gcs', got {mode!r}")
        opts = dict(options or {})
        allowed = sorted(k for keys in OPTIONS.values() for k in keys)
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise CloudConfigError(f"{name} has unknown keys {unknown}; allowed: {allowed}")
        self.mode, self.bucket_name, self.prefix, self.options = mode, bucket_name, prefix, opts
        self.enabled = mode in ("s3", "gcs")
        self.store_options = {k: opts[k] for k in _STORE if k in opts}
        self.upload_options = {k: opts[k] for k in _UPLOAD if k in opts}
        self.create_bucket = opts.get("create_bucket", False)
        self.flush_timeout_s = opts.get("flush_timeout_s", 600.0)
        if self.enabled:
            self._check(name)

    def _check(self, name: str) -> None:
        if self.bucket_name is None:
            raise CloudConfigError(f"cloud_save_mode={self.mode!r} needs bucket_name (the bucket to save to)")
        validate_bucket_name(self.bucket_name)
        if not isinstance(self.prefix, str):
            raise CloudConfigError(f"cloud_dir_prefix must be a string, got {type(self.prefix).__name__}")
        if not isinstance(self.create_bucket, bool):
            raise CloudConfigError(f"{name}['create_bucket'] must be True or False, got {self.create_bucket!r}")
        timeout = self.flush_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < float("inf"):
            raise CloudConfigError(f"{name}['flush_timeout_s'] must be a number of seconds >= 0, not {timeout!r}")
        try:  # a bad one would stop the upload thread later, and leave the end of training waiting for its flush
            BackgroundUploader.check_options(**self.upload_options)
        except CloudConfigError as err:
            raise CloudConfigError(f"{name}: {err}") from None

    def make_store(self) -> S3Store:
        """The store (its options checked, nothing sent), after its preflight (bucket reachable and writable)."""
        kwargs = dict(self.store_options)
        if self.mode == "gcs":
            kwargs.setdefault("endpoint_url", GCS_ENDPOINT)
            kwargs.setdefault("region", "auto")
        store = S3Store(str(self.bucket_name), prefix=str(self.prefix), **kwargs)
        store.preflight(create_bucket=self.create_bucket)
        logger.info("cloud: %s preflight passed", store)
        return store

    def make_mirror(self, store: S3Store, folder: Path, remote_base: str) -> FolderMirror:
        """A :class:`~aitoolbox.cloud.mirror.FolderMirror` of ``folder`` with these upload options."""
        timeout = float(self.flush_timeout_s)
        return FolderMirror(store, folder, remote_base, flush_timeout_s=timeout, **self.upload_options)
