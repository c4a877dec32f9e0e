"""CloudSettings: the cloud package owns its option names (read from the classes that take them) and its errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from aitoolbox.cloud import BackgroundUploader, CloudConfigError, S3Store
from aitoolbox.cloud.settings import OPTIONS, CloudSettings
from aitoolbox.cloud.testing import SeaweedServer


def test_every_option_of_the_store_and_the_uploader_is_reachable() -> None:
    allowed = {k for keys in OPTIONS.values() for k in keys}
    store = inspect.signature(S3Store.__init__).parameters
    assert {n for n, p in store.items() if p.kind is p.KEYWORD_ONLY} - {"prefix"} <= allowed
    assert {"connect_timeout", "read_timeout", "part_size", "max_concurrency"} <= allowed
    assert set(inspect.signature(BackgroundUploader.check_options).parameters) <= allowed
    assert {"create_bucket", "flush_timeout_s"} <= allowed


def test_options_are_split_by_what_takes_them() -> None:
    settings = CloudSettings(
        "s3", "my-bucket", "runs", {"connect_timeout": 5, "read_timeout": 30, "max_attempts": 2, "create_bucket": True}
    )
    assert settings.store_options == {"connect_timeout": 5, "read_timeout": 30}
    assert settings.upload_options == {"max_attempts": 2}
    assert settings.create_bucket is True and settings.flush_timeout_s == 600.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ftp", "b", "", {}), r"cloud_save_mode must be None, 'local', 's3' or 'gcs', got 'ftp'"),
        (("s3", None, "", {}), r"cloud_save_mode='s3' needs bucket_name"),
        (("s3", "b", "", {"timeout": 1}), r"unknown keys \['timeout'\]; allowed: \[.*'connect_timeout'.*\]"),
        (("local", None, "", {"timeout": 1}), r"unknown keys \['timeout'\]"),  # refused even with uploads off
        (("s3", "ok-bucket", 3, {}), r"cloud_dir_prefix must be a string, got int"),
        (("s3", "ok-bucket", "", {"max_attempts": 0}), r"cloud_options: max_attempts must be an int >= 1, got 0"),
    ],
)
def test_bad_settings_are_a_cloud_config_error_naming_the_fix(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(CloudConfigError, match=message) as info:
        CloudSettings(*args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_timeouts_reach_the_client(s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path) -> None:
    options = {"endpoint_url": s3_server.endpoint_url, "create_bucket": True, "connect_timeout": 5, "read_timeout": 30}
    store = CloudSettings("s3", bucket, "p", options).make_store()
    config = store.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
