"""The documentation site: every Python block of every page under docs/ runs as written (the blocks of one page in
order, in one namespace, in a fresh working directory; the S3 page against a real S3 server on loopback), and the
site builds with Sphinx with warnings as errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text())


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.DOTALL | re.MULTILINE)


def test_the_guide_pages_have_runnable_examples() -> None:
    names = {p.name for p in PAGES}
    guide = "index variants models callbacks progress checkpoints cloud s3-local distributed fastcollate".split()
    assert {f"{name}.md" for name in guide} <= names


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_python_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    if page.name == "cloud.md":
        server: Any = request.getfixturevalue("s3_server")
        request.getfixturevalue("aws_env")
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)  # the page relies on boto3's standard chain
        client = server.client()
        if "cloud-results" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket="cloud-results")
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    blocks = python_blocks(page)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.relative_to(DOCS)} block {i + 1}", "exec"), namespace)


@pytest.mark.slow
def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "api" / "loop.html").is_file() and (tmp_path / "migration.html").is_file()
