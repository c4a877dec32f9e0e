"""S3Store: upload, download, list, delete and a preflight, through boto3's standard configuration chain."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitoolbox.cloud._endpoint import check_endpoint, redact_url
from aitoolbox.cloud.bucket import validate_bucket_name
from aitoolbox.cloud.errors import (
    CloudAuthError,
    CloudConfigError,
    CloudConnectionError,
    CloudError,
    CloudIntegrityError,
    CloudNotFoundError,
)

__all__ = ["ObjectInfo", "S3Store"]

logger = logging.getLogger(__name__)

MiB = 1 << 20
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_MISSING = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float


@dataclass(frozen=True)
class _Digest:
    size: int
    etag_single: str
    etag_multipart: str

    def etag(self, part_size: int) -> str:
        """The ETag S3 gives this content: the MD5, or for a multipart upload the MD5 of the parts' MD5s."""
        return self.etag_multipart if self.size >= part_size else self.etag_single


class S3Store:
    """A bucket (and key prefix) on S3 or any S3-compatible server (GCS XML API, MinIO, SeaweedFS...).

    Credentials, region and endpoint come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/instance
    roles, ``AWS_REGION``, ``AWS_ENDPOINT_URL``), unless given here. Nothing is sent at construction; the bucket name is
    checked against S3's rules first.

    Uploads stream from disk (multipart above ``part_size``, never the whole file in memory) and are verified: the
    server's ETag must equal the MD5 (or multipart MD5) of the local file, computed on a second thread while the
    upload runs, and the object's size must match. Downloads are checked the same way before they are renamed into
    place.

    Args:
        bucket: the bucket name.
        prefix: a key prefix ("folder") for every object.
        endpoint_url: e.g. ``http://127.0.0.1:8333`` or ``https://storage.googleapis.com``.
        region, profile: as in the AWS configuration.
        part_size: multipart chunk size (and threshold).
        max_concurrency: parallel part uploads per file.
        connect_timeout, read_timeout: seconds per request.

    Example:
        .. code-block:: python

            store = S3Store("my-bucket", prefix="experiments", endpoint_url="http://127.0.0.1:8333")
            store.preflight(create_bucket=True)
            store.upload_file("results/summary.md", "proj/exp/summary.md")
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        part_size: int = 16 * MiB,
        max_concurrency: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.bucket = validate_bucket_name(bucket)
        if not isinstance(prefix, str):
            raise CloudConfigError(f"prefix must be a string, got {type(prefix).__name__}")
        self.prefix = prefix.strip("/")
        check_endpoint(endpoint_url, "endpoint_url")
        if part_size < 5 * MiB:
            raise CloudConfigError(f"part_size must be at least 5 MiB (S3's minimum part), got {part_size}")
        import boto3
        from botocore.config import Config

        try:
            session = boto3.Session(profile_name=profile, region_name=region)
        except Exception as err:  # botocore.exceptions.ProfileNotFound
            raise CloudConfigError(f"AWS profile {profile!r} cannot be used: {err}") from err
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": 2},  # the uploader retries with its own backoff
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._session = session
        if endpoint_url is None:
            check_endpoint(
                os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"
            )
        try:
            self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        except ValueError as err:  # botocore's "Invalid endpoint" for one it cannot parse
            raise CloudConfigError(
                redact_url(f"the S3 endpoint cannot be used: {err}; e.g. endpoint_url='http://host:8333'")
            ) from None  # the cause's text would show the credentials again
        #: the endpoint, as shown in messages (credentials in it redacted)
        self.endpoint_url = redact_url(self.client.meta.endpoint_url)
        self.part_size = part_size
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def key(self, relative: str) -> str:
        """The full key of ``relative`` under the prefix."""
        relative = relative.lstrip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ------------------------------------------------------------------ errors

    def _translate(self, err: Exception, action: str, key: str | None = None) -> CloudError:
        """The typed error for a boto3/botocore failure; its message never shows credentials of a URL."""
        translated = self._classify(err, action, key)
        return type(translated)(redact_url(str(translated)))

    def _classify(self, err: Exception, action: str, key: str | None) -> CloudError:
        from botocore import exceptions as bx

        where = self.url(key) if key else f"bucket {self.bucket!r}"
        if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
            return CloudAuthError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (HMAC keys for GCS), "
                f"AWS_PROFILE, or run where an instance role is available ({action} {where})"
            )
        if isinstance(
            err, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError | bx.ConnectionClosedError
        ):
            return CloudConnectionError(
                f"cannot reach the S3 endpoint {self.endpoint_url} to {action} {where}: {err}; check endpoint_url / "
                "AWS_ENDPOINT_URL and that the server is up"
            )
        if isinstance(err, bx.ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _BAD_CREDENTIALS:
                return CloudAuthError(
                    f"the credentials were rejected by {self.endpoint_url} ({code}) to {action} {where}"
                )
            if code in _DENIED or status == 403:
                return CloudAuthError(
                    f"permission denied to {action} {where} ({code}): the credentials need {_PERMS[action]}"
                )
            if code in _MISSING or status == 404:
                return CloudNotFoundError(f"{where} does not exist at {self.endpoint_url} ({action})")
            return CloudError(f"{action} {where} failed: {code} {err}")
        if isinstance(err, bx.BotoCoreError | OSError):
            return CloudConnectionError(f"{action} {where} failed: {err}")
        return CloudError(f"{action} {where} failed: {err}")

    # ------------------------------------------------------------------ preflight

    def preflight(self, *, create_bucket: bool = False) -> None:
        """Check before training that the bucket is reachable and writable (and create it when allowed).

        Raises:
            CloudAuthError: no credentials, or a missing permission (named).
            CloudConnectionError: the endpoint cannot be reached.
            CloudNotFoundError: the bucket does not exist and ``create_bucket`` is False.
        """
        from botocore import exceptions as bx

        if self._session.get_credentials() is None:
            raise self._translate(bx.NoCredentialsError(), "check")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as err:
            translated = self._translate(self._explain_head_error(err), "check")
            if not isinstance(translated, CloudNotFoundError):
                raise translated from err
            if not create_bucket:
                raise CloudNotFoundError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint_url}; create it, or allow creating it "
                    "(create_bucket=True)"
                ) from err
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except Exception as create_err:
                raise self._translate(create_err, "create") from create_err
            logger.info("created bucket %s at %s", self.bucket, self.endpoint_url)
        probe = self.key(f".aitoolbox-preflight-{uuid.uuid4().hex}")
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        except Exception as err:
            raise self._translate(err, "write") from err
        try:
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except Exception as err:  # uploads never delete: a missing delete permission only leaves the probe
            logger.warning("preflight probe %s could not be deleted: %s", self.url(probe), err)

    def _explain_head_error(self, err: Exception) -> Exception:
        """A HEAD answer has no body, so a bad secret and a missing permission both read "403": ask once more with a
        request whose answer names the cause (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied)."""
        from botocore import exceptions as bx

        if not isinstance(err, bx.ClientError) or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 403:
            return err
        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except bx.ClientError as detailed:
            code = str(detailed.response.get("Error", {}).get("Code", ""))
            if code and not code.isdigit():
                return detailed  # type: ignore[no-any-return]
        except Exception:  # the diagnosis is best effort: the HEAD error stands
            pass
        return err  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ transfers

    def _digest(self, path: Path) -> _Digest:
        return S3Store._digest_with(path, self.part_size)

    @staticmethod
    def _digest_with(path: Path, part_size: int) -> _Digest:
        part_md5s: list[bytes] = []
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(part_size):
                part_md5s.append(hashlib.md5(chunk, usedforsecurity=False).digest())
                size += len(chunk)
        if not part_md5s:
            single = hashlib.md5(b"", usedforsecurity=False).hexdigest()
        else:  # the whole-file MD5 matters only for one-part (non-multipart) objects
            single = part_md5s[0].hex() if len(part_md5s) == 1 else ""
        multipart = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest() + f"-{len(part_md5s)}"
        return _Digest(size, single, multipart)

    def _digest_in_background(self, path: Path) -> tuple[threading.Thread, dict[str, Any]]:
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["digest"] = self._digest(path)
            except OSError as err:
                out["error"] = err

        thread = threading.Thread(target=run, name="aitoolbox-md5", daemon=True)
        thread.start()
        return thread, out

    def upload_file(self, local: str | os.PathLike[str], key: str) -> int:
        """Upload a file (streamed; multipart when large) and verify what the server stored; returns its size.

        Raises:
            CloudIntegrityError: the stored size or ETag differs from the local file's.
            CloudConnectionError, CloudAuthError, CloudNotFoundError: as their names say.
        """
        from boto3.s3.transfer import TransferConfig

        path = Path(local)
        hashing, result = self._digest_in_background(path)  # hashlib releases the GIL: overlaps the upload
        config = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.max_concurrency,
            use_threads=self.max_concurrency > 1,
        )
        try:
            self.client.upload_file(str(path), self.bucket, key, Config=config)
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise self._translate(err, "upload", key) from err
        finally:
            hashing.join()
        if "error" in result:
            raise result["error"]
        digest: _Digest = result["digest"]
        self._verify(key, head, digest.size, digest.etag(self.part_size))
        return digest.size

    def upload_bytes(self, data: bytes, key: str) -> int:
        """Upload a small payload in one request, with ``Content-MD5`` so the server rejects a corrupted body."""
        md5 = hashlib.md5(data, usedforsecurity=False)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise self._translate(err, "upload", key) from err
        self._verify(key, head, len(data), md5.hexdigest())
        return len(data)

    def _verify(self, key: str, head: dict[str, Any], size: int, etag: str) -> None:
        if head.get("ContentLength") != size:
            raise CloudIntegrityError(f"{self.url(key)} has {head.get('ContentLength')} bytes, the local file {size}")
        remote = str(head.get("ETag", "")).strip('"')
        if remote and all(c in "0123456789abcdef-" for c in remote) and remote != etag:
            raise CloudIntegrityError(f"{self.url(key)} has ETag {remote}, the local file's MD5 gives {etag}")

    def download_file(self, key: str, local: str | os.PathLike[str]) -> Path:
        """Download into a temporary file beside ``local``, check its size and MD5 against the object, then rename."""
        path = Path(local)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.client.download_file(self.bucket, key, str(tmp))
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            tmp.unlink(missing_ok=True)
            raise self._translate(err, "download", key) from err
        remote = str(head.get("ETag", "")).strip('"')
        parts = int(remote.rsplit("-", 1)[1]) if "-" in remote and remote.rsplit("-", 1)[1].isdigit() else 1
        digest = self._digest(tmp)
        # a multipart ETag can be recomputed only with the part size used; ours is known, others are checked by size
        comparable = parts == 1 or -(-digest.size // self.part_size) == parts
        expected = (digest.etag_multipart if parts > 1 else digest.etag_single) if comparable else remote
        try:
            self._verify(key, head, digest.size, expected)
        except CloudIntegrityError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        return path

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except Exception as err:
            raise self._translate(err, "download", key) from err

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a full key prefix, e.g. from :meth:`key`)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], int(obj["Size"]), obj["LastModified"].timestamp())
        except Exception as err:
            raise self._translate(err, "list", prefix) from err

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as err:
            translated = self._translate(err, "read", key)
            if isinstance(translated, CloudNotFoundError):
                return False
            raise translated from err

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise self._translate(err, "delete", key) from err


_PERMS = {
    "check": "s3:ListBucket (HeadBucket)",
    "create": "s3:CreateBucket",
    "write": "s3:PutObject",
    "upload": "s3:PutObject",
    "download": "s3:GetObject",
    "read": "s3:GetObject",
    "list": "s3:ListBucket",
    "delete": "s3:DeleteObject",
}
