"""The exceptions raised by :mod:`aitoolbox.cloud`, split by what happened and whether a retry can help."""

from __future__ import annotations

__all__ = [
    "CloudAuthError",
    "CloudConfigError",
    "CloudConnectionError",
    "CloudError",
    "CloudIntegrityError",
    "CloudNotFoundError",
    "CloudUploadError",
]


class CloudError(Exception):
    """Base class of every cloud error."""


class CloudConfigError(CloudError, ValueError):
    """A setting is invalid (bucket name, prefix, mode); nothing was sent. The message says what to change."""


class CloudConnectionError(CloudError, ConnectionError):
    """The endpoint cannot be reached (wrong ``endpoint_url``, network down, server stopped). Retrying can help."""


class CloudAuthError(CloudError, PermissionError):
    """No credentials were found, or they lack a permission (the message names it)."""


class CloudNotFoundError(CloudError, FileNotFoundError):
    """The bucket or object does not exist."""


class CloudIntegrityError(CloudError, ValueError):
    """What the server stored differs from the local file (size or checksum). The upload is retried."""


class CloudUploadError(CloudError, OSError):
    """An upload failed after every retry; the local file is untouched and listed as pending."""
