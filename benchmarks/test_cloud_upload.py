"""Upload throughput of a 1 GB checkpoint to a loopback S3 server (SeaweedFS): S3Store.upload_file (streamed,
multipart, verified against the local MD5) against plain boto3 ``upload_file`` (``aws s3 cp`` style), interleaved
round by round; and the peak extra memory of the BackgroundUploader, measured in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aitoolbox.cloud import S3Store
from aitoolbox.cloud.testing import SeaweedServer, aws_environment

sys.path.insert(0, str(Path(__file__).parent))
from _scale import scaled

MiB = 1 << 20
SIZE = scaled(1 << 30, 64 * MiB)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with SeaweedServer.serve(tmp_path_factory.mktemp("seaweedfs-bench")) as s:
        yield s


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blob") / "checkpoint.pt"
    with open(path, "wb") as f:
        for _ in range(SIZE // (64 * MiB)):
            f.write(os.urandom(64 * MiB))
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in aws_environment(tmp_path).items():
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)


def test_upload_throughput(
    benchmark: Any, interleaved_baseline: Any, server: SeaweedServer, big_file: Path, env: None, report: Any
) -> None:
    store = S3Store("bench-upload", endpoint_url=server.endpoint_url)
    store.preflight(create_bucket=True)
    plain = server.client()
    n = [0]

    def baseline() -> None:
        plain.upload_file(str(big_file), "bench-upload", "plain/checkpoint.pt")  # type: ignore[attr-defined]

    def candidate() -> None:
        n[0] += 1
        store.upload_file(big_file, f"ours/checkpoint-{n[0]}.pt")

    benchmark.group = "upload"
    benchmark.extra_info.update(workload="S3", candidate="S3Store.upload_file (verified)", baseline="boto3 upload_file")
    benchmark.pedantic(candidate, setup=interleaved_baseline(benchmark, baseline), rounds=2, warmup_rounds=0)
    if not benchmark.disabled:  # pytest-benchmark's stats live in benchmark.stats.stats
        rate = SIZE / benchmark.stats.stats.min / 1e6
        report(f"upload of {SIZE / 1e9:.2f} GB: {rate:.0f} MB/s (S3Store, best round)")
    assert store.list(store.key("ours/")).__next__().size == SIZE


def test_uploader_peak_memory(server: SeaweedServer, big_file: Path, env: None, report: Any) -> None:
    child = textwrap.dedent(
        f"""
        import re
        from aitoolbox.cloud import BackgroundUploader, S3Store, UploadItem
        def rss(field):
            return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        store = S3Store("bench-memory", endpoint_url={server.endpoint_url!r})
        store.preflight(create_bucket=True)
        up = BackgroundUploader(store, {str(big_file.parent / "journal.jsonl")!r})
        before = rss("VmRSS")
        up.submit([[UploadItem.file({str(big_file)!r}, "mem/checkpoint.pt")]])
        assert up.flush().ok
        print(rss("VmHWM") - before)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    extra = int(out.stdout.strip().splitlines()[-1])
    report(
        f"BackgroundUploader peak extra memory for a {SIZE / 1e9:.2f} GB file: {extra / MiB:.0f} MiB "
        f"(part size 16 MiB x 4 parallel parts = 64 MiB; the file is streamed, never held whole)"
    )
    assert extra < 256 * MiB  # streamed: bounded by the parts in flight, not by the file's size
