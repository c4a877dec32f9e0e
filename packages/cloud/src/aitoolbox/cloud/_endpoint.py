"""Endpoint URLs: checked before boto3 sees them (a scheme, no credentials), and credentials never shown."""

from __future__ import annotations

import re

from aitoolbox.cloud.errors import CloudConfigError

__all__ = ["check_endpoint", "redact_url"]

_URL_USER = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@]+@")


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it (``http://KEY:SECRET@host``) replaced by ``***``: no message,
    log line or ``repr`` of this package shows them.

    >>> redact_url("cannot reach http://AKIA:s3cr3t@minio:9000")
    'cannot reach http://***@minio:9000'
    """
    return _URL_USER.sub(lambda m: f"{m['scheme']}***@", text)


def check_endpoint(endpoint: str | None, source: str) -> None:
    """Refuse, before boto3 sees it, an endpoint without a scheme or with credentials in it (never echoed)."""
    if endpoint and not endpoint.startswith(("http://", "https://")):
        fixed = redact_url("http://" + endpoint)
        raise CloudConfigError(f"{source} must start with http:// or https://, got {fixed[7:]!r}; e.g. {fixed!r}")
    if endpoint and redact_url(endpoint) != endpoint:
        raise CloudConfigError(
            f"{source} holds credentials ({redact_url(endpoint)}): give the endpoint without them and the keys as "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile)"
        )
