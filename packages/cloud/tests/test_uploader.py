"""BackgroundUploader against a real server that is SIGKILLed and restarted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitoolbox.cloud import BackgroundUploader, CloudError, S3Store, UploadItem
from aitoolbox.cloud.testing import SeaweedServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A server of its own: these tests kill it."""
    with SeaweedServer.serve(tmp_path_factory.mktemp("seaweedfs-outage")) as server:
        yield server


def _files(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"part{i}.pt"
        p.write_bytes(os.urandom(50_000 + i))
        paths.append(p)
    return paths


def test_groups_upload_in_order_and_report(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    store.preflight(create_bucket=True)
    up = BackgroundUploader(store, tmp_path / "journal.jsonl")
    files = _files(tmp_path, 3)
    up.submit([[UploadItem.file(p, f"ckpt/{p.name}") for p in files], [UploadItem.payload(b"ckpt\n", "latest")]])
    report = up.flush(timeout=60)
    assert report.ok and report.uploaded == 4 and str(report).startswith("4 files")
    for p in files:
        assert store.read_bytes(f"ckpt/{p.name}") == p.read_bytes()
    assert up.pending_in_journal() == [] and up.uploaded(["latest", "ckpt/part0.pt"])
    up.close()
    with pytest.raises(CloudError, match="closed"):
        up.submit([[UploadItem.payload(b"x", "y")]])


def test_outage_keeps_order_journals_and_resumes(
    outage_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    store = S3Store(bucket, endpoint_url=outage_server.endpoint_url, connect_timeout=1)
    store.preflight(create_bucket=True)
    outage_server.kill()
    up = BackgroundUploader(store, tmp_path / "journal.jsonl", max_attempts=2, backoff_s=0.05)
    files = _files(tmp_path, 2)
    up.submit([[UploadItem.file(p, f"ckpt/{p.name}") for p in files], [UploadItem.payload(b"ckpt\n", "latest")]])
    report = up.flush(timeout=60)
    assert not report.ok and report.failed[0][0] == "ckpt/part0.pt" and "CloudConnectionError" in report.failed[0][1]
    assert sorted(report.pending) == ["ckpt/part1.pt", "latest"] and "uploaded on resume" in str(report)

    outage_server.start()
    assert not store.exists("latest")  # the pointer never went up before its files
    resumed = BackgroundUploader(store, tmp_path / "journal.jsonl")  # e.g. the resumed experiment's
    assert resumed.resume_pending() == 3
    assert resumed.flush(timeout=60).ok
    assert store.read_bytes("latest") == b"ckpt\n"
    assert all(store.read_bytes(f"ckpt/{p.name}") == p.read_bytes() for p in files)
    assert resumed.pending_in_journal() == []


def test_retries_ride_out_a_short_outage(
    outage_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    store = S3Store(bucket, endpoint_url=outage_server.endpoint_url, connect_timeout=1)
    store.preflight(create_bucket=True)
    outage_server.kill()
    restarter = threading.Timer(1.0, outage_server.start)
    restarter.start()
    up = BackgroundUploader(store, tmp_path / "journal.jsonl", max_attempts=12, backoff_s=0.5, max_backoff_s=8)
    files = _files(tmp_path, 2)
    up.submit([[UploadItem.file(p, p.name) for p in files]])
    report = up.flush(timeout=240)
    restarter.join()
    assert report.ok, str(report)
    assert all(store.read_bytes(p.name) == p.read_bytes() for p in files)


def test_a_crashed_process_pending_uploads_are_resumed(
    outage_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    store = S3Store(bucket, endpoint_url=outage_server.endpoint_url)
    store.preflight(create_bucket=True)
    payload = tmp_path / "model.pt"
    payload.write_bytes(os.urandom(70_000))
    child = textwrap.dedent(
        f"""
        import os, signal
        from aitoolbox.cloud import BackgroundUploader, S3Store, UploadItem
        store = S3Store({bucket!r}, endpoint_url="http://127.0.0.1:9", connect_timeout=1)  # unreachable
        up = BackgroundUploader(store, {str(tmp_path / "journal.jsonl")!r}, max_attempts=50, backoff_s=1)
        up.submit([[UploadItem.file({str(payload)!r}, "exp/model.pt")], [UploadItem.payload(b"x\\n", "exp/latest")]])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == -9, proc.stderr
    up = BackgroundUploader(store, tmp_path / "journal.jsonl")
    assert [r["key"] for r in up.pending_in_journal()] == ["exp/model.pt", "exp/latest"]
    up.resume_pending()
    assert up.flush(timeout=60).ok
    assert store.read_bytes("exp/model.pt") == payload.read_bytes()


class _GatedStore:
    """The real store, whose first upload waits for ``gate`` (so that groups queue up behind it)."""

    def __init__(self, store: S3Store, gate: threading.Event) -> None:
        self.store, self.gate = store, gate
        self.order: list[str] = []

    def upload_file(self, path: str, key: str) -> int:
        self.gate.wait(30)
        self.order.append(key)
        return self.store.upload_file(path, key)

    def upload_bytes(self, data: bytes, key: str) -> int:
        self.gate.wait(30)
        self.order.append(key)
        return self.store.upload_bytes(data, key)


def test_promote_uploads_the_newest_first_drops_stale_groups_and_older_pointers(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    store.preflight(create_bucket=True)
    gate = threading.Event()
    gated = _GatedStore(store, gate)
    up = BackgroundUploader(gated, tmp_path / "journal.jsonl")  # type: ignore[arg-type]
    (f,) = _files(tmp_path, 1)

    def ckpt(name: str) -> list[list[UploadItem]]:
        return [[UploadItem.file(f, f"{name}/model.pt")], [UploadItem.payload(name.encode(), "latest", volatile=True)]]

    up.submit([[UploadItem.file(f, "first.pt")]])  # in flight: the worker waits at the gate
    for name in ("best", "stale", "newest"):
        up.submit(ckpt(name), tag=name)
    dropped = up.promote("newest", drop=lambda tag: tag == "stale")
    assert dropped == 3  # stale's two files, best's pointer
    gate.set()
    report = up.flush(timeout=60)
    assert report.ok and report.dropped == 3 and "3 superseded uploads dropped" in str(report)
    assert gated.order == ["first.pt", "newest/model.pt", "latest", "best/model.pt"]
    assert store.read_bytes("latest") == b"newest"  # the older pointer never lands after the newer one
    assert not store.exists("stale/model.pt")
    assert up.settled(["stale/model.pt", "newest/model.pt"]) and not up.uploaded(["stale/model.pt"])
    # the journal settles what was dropped: nothing is uploaded again on resume, and the next run knows it
    again = BackgroundUploader(store, tmp_path / "journal.jsonl")
    assert again.resume_pending() == 0 and again.settled(["stale/model.pt", "best/model.pt"])
    assert up.promote("absent") == 0
