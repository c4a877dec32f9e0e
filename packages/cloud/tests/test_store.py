from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import aitoolbox.cloud
from aitoolbox.cloud import (
    CloudAuthError,
    CloudConfigError,
    CloudConnectionError,
    CloudIntegrityError,
    CloudNotFoundError,
    S3Store,
    suggest_bucket_name,
    validate_bucket_name,
)
from aitoolbox.cloud.testing import READER, SeaweedServer

MiB = 1 << 20


@pytest.mark.parametrize(
    ("name", "reason", "suggestion"),
    [
        ("cloud_results", "contains '_'", "cloud-results"),
        ("Results", "contains 'R'", "results"),
        ("ab", "2 characters", "ab-bucket"),
        ("-abc", "begin and end with", "abc"),
        ("a..b", "contains '..'", "a.b"),
        ("192.168.1.1", "IP address", "my-bucket"),
        ("xn--abc", "reserved prefix", "my-bucket"),
        ("data-s3alias", "reserved suffix", "my-bucket"),
    ],
)
def test_bucket_names_are_checked_before_any_request(name: str, reason: str, suggestion: str) -> None:
    with pytest.raises(CloudConfigError, match=f"{reason}.*use e.g. '{suggestion}'"):
        validate_bucket_name(name)
    assert suggest_bucket_name(name) == suggestion
    for good in ("cloud-results", "my.bucket.1", "abc"):
        assert validate_bucket_name(good) == good


def test_preflight_creates_the_bucket_when_allowed(s3_server: SeaweedServer, aws_env: None, bucket: str) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    with pytest.raises(CloudNotFoundError, match=f"bucket '{bucket}' does not exist at .*create_bucket=True"):
        store.preflight()
    store.preflight(create_bucket=True)
    store.preflight()
    assert [o.key for o in store.list()] == []  # the write probe was removed


def test_preflight_failures_name_the_problem(
    s3_server: SeaweedServer, aws_env: None, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    S3Store(bucket, endpoint_url=s3_server.endpoint_url).preflight(create_bucket=True)
    closed = S3Store(bucket, endpoint_url="http://127.0.0.1:9", connect_timeout=1)
    with pytest.raises(
        CloudConnectionError, match=r"cannot reach the S3 endpoint http://127.0.0.1:9 .*AWS_ENDPOINT_URL"
    ):
        closed.preflight()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    with pytest.raises(CloudAuthError, match=r"permission denied to write .* need s3:PutObject"):
        S3Store(bucket, endpoint_url=s3_server.endpoint_url).preflight()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(CloudAuthError, match=r"the credentials were rejected by .* \(InvalidAccessKeyId\)"):
        S3Store(bucket, endpoint_url=s3_server.endpoint_url).preflight()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")  # a wrong secret is not a missing permission
    with pytest.raises(CloudAuthError, match=r"the credentials were rejected by .* \(SignatureDoesNotMatch\)"):
        S3Store(bucket, endpoint_url=s3_server.endpoint_url).preflight()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CloudAuthError, match="no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        S3Store(bucket, endpoint_url=s3_server.endpoint_url).preflight()


def test_an_endpoint_without_scheme_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        CloudConfigError, match=r"endpoint_url must start with http:// or https://, got '127.0.0.1:8333'"
    ):
        S3Store("bucket", endpoint_url="127.0.0.1:8333")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost:8333")
    with pytest.raises(CloudConfigError, match=r"AWS_ENDPOINT_URL must start with .* e.g. 'http://localhost:8333'"):
        S3Store("bucket")


@pytest.mark.parametrize("endpoint", ["http://AKIAKEY:s3cr3tSECRET@127.0.0.1:8333", "AKIAKEY:s3cr3tSECRET@host:1"])
def test_credentials_in_an_endpoint_are_refused_and_never_shown(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    import traceback

    for source in ("endpoint_url", "AWS_ENDPOINT_URL"):
        with pytest.raises(CloudConfigError, match=rf"{source} (holds credentials|must start with)") as info:
            if source == "endpoint_url":
                S3Store("bucket", endpoint_url=endpoint)
            else:
                monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
                S3Store("bucket")
        shown = "".join(traceback.format_exception(info.value))
        assert "s3cr3tSECRET" not in shown and "AKIAKEY" not in shown and "***@" in shown


def test_endpoint_from_the_standard_environment(
    s3_server: SeaweedServer, aws_env: None, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    store = S3Store(bucket)
    assert store.endpoint_url == s3_server.endpoint_url
    store.preflight(create_bucket=True)


@pytest.mark.parametrize("size", [0, 1000, 12 * MiB + 123], ids=["empty", "small", "multipart"])
def test_upload_verify_download_round_trip(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, size: int
) -> None:
    store = S3Store(bucket, prefix="runs/a", endpoint_url=s3_server.endpoint_url, part_size=5 * MiB)
    store.preflight(create_bucket=True)
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(size))
    before = (src.stat().st_mtime_ns, hashlib.sha256(src.read_bytes()).hexdigest())
    key = store.key("ckpt/blob.bin")
    assert key == "runs/a/ckpt/blob.bin"
    assert store.upload_file(src, key) == size
    assert (src.stat().st_mtime_ns, hashlib.sha256(src.read_bytes()).hexdigest()) == before  # untouched
    assert store.exists(key) and not store.exists(store.key("nope"))
    assert [(o.key, o.size) for o in store.list(store.key("ckpt/"))] == [(key, size)]
    out = store.download_file(key, tmp_path / "copy" / "blob.bin")
    assert out.read_bytes() == src.read_bytes()
    store.upload_bytes(b"ckpt-e0001\n", store.key("latest"))
    assert store.read_bytes(store.key("latest")) == b"ckpt-e0001\n"
    store.delete(key)
    assert not store.exists(key)


def test_a_mismatching_server_copy_is_detected(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    store.preflight(create_bucket=True)
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100)
    real_head = store.client.head_object
    # no real server stores different bytes on purpose: report a corrupted copy to reach the check
    monkeypatch.setattr(
        store.client, "head_object", lambda **kw: {**real_head(**kw), "ETag": '"00000000000000000000000000000000"'}
    )
    with pytest.raises(CloudIntegrityError, match="has ETag 0+, the local file's MD5 gives"):
        store.upload_file(src, "k")


def test_missing_objects(s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    store.preflight(create_bucket=True)
    with pytest.raises(CloudNotFoundError, match="does not exist"):
        store.download_file("missing", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
    with pytest.raises(CloudConfigError, match="part_size must be at least 5 MiB"):
        S3Store(bucket, part_size=1024)


def test_public_api_is_pinned() -> None:
    assert sorted(aitoolbox.cloud.__all__) == [
        "BackgroundUploader",
        "CloudAuthError",
        "CloudConfigError",
        "CloudConnectionError",
        "CloudError",
        "CloudIntegrityError",
        "CloudNotFoundError",
        "CloudUploadError",
        "ObjectInfo",
        "S3Store",
        "UploadItem",
        "UploadReport",
        "__version__",
        "suggest_bucket_name",
        "validate_bucket_name",
    ]
