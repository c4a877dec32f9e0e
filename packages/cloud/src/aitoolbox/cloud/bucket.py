"""S3 bucket-name rules, checked before any request is sent."""

from __future__ import annotations

import re

from aitoolbox.cloud.errors import CloudConfigError

__all__ = ["suggest_bucket_name", "validate_bucket_name"]

_ALLOWED = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def _problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return f"it has {len(name)} characters (3 to 63 allowed)"
    bad = sorted({c for c in name if not ((c.islower() and c.isascii()) or c.isdigit() or c in ".-")})
    if bad:
        return f"it contains {''.join(bad)!r} (only lowercase letters, digits, '-' and '.' are allowed)"
    if not _ALLOWED.fullmatch(name):  # not match: "$" lets a trailing newline through
        return "it must begin and end with a lowercase letter or a digit"
    if ".." in name:
        return "it contains '..'"
    if _IP.fullmatch(name):
        return "it is formatted as an IP address"
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return f"it starts with the reserved prefix {prefix!r}"
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return f"it ends with the reserved suffix {suffix!r}"
    return None


def suggest_bucket_name(name: str) -> str:
    """A valid name close to ``name``: lowercase, other characters turned into '-', trimmed and padded.

    Example:
        >>> suggest_bucket_name("cloud_results")
        'cloud-results'
    """
    s = re.sub(r"[^a-z0-9.-]+", "-", name.lower())
    s = re.sub(r"\.{2,}", ".", s).strip(".-")[:63].strip(".-")
    while len(s) < 3:
        s = (s + "-bucket").strip("-")
    return s if _problem(s) is None else "my-bucket"


def validate_bucket_name(name: object) -> str:
    """Return ``name`` if it is a valid S3 bucket name; else raise with the reason and a valid suggestion.

    Example:
        >>> validate_bucket_name("cloud-results")
        'cloud-results'
        >>> try:
        ...     validate_bucket_name("cloud_results")
        ... except ValueError as err:
        ...     print(str(err).split(": ", 1)[1])
        it contains '_' (only lowercase letters, digits, '-' and '.' are allowed); use e.g. 'cloud-results'
    """
    if not isinstance(name, str) or not name:
        raise CloudConfigError(f"bucket_name must be a non-empty string, got {name!r}")
    problem = _problem(name)
    if problem:
        raise CloudConfigError(
            f"bucket_name={name!r} is not a valid S3 bucket name: {problem}; use e.g. {suggest_bucket_name(name)!r}"
        )
    return name
