"""FolderMirror against a real server: what leaves the folder, and a journal that names anything else."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from aitoolbox.cloud import CloudConfigError, S3Store
from aitoolbox.cloud.mirror import FolderMirror
from aitoolbox.cloud.testing import SeaweedServer

pytestmark = pytest.mark.slow


def _mirror(server: SeaweedServer, bucket: str, folder: Path) -> FolderMirror:
    store = S3Store(bucket, endpoint_url=server.endpoint_url)
    store.preflight(create_bucket=True)
    return FolderMirror(store, folder, "exp", flush_timeout_s=60)


def test_symbolic_links_are_never_uploaded(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "exp"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "a.json").write_text("{}")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "id_rsa").write_text("PRIVATE KEY")
    (folder / "key").symlink_to(tmp_path / "secrets" / "id_rsa")
    (folder / "linked").symlink_to(tmp_path / "secrets")
    mirror = _mirror(s3_server, bucket, folder)
    with caplog.at_level(logging.WARNING):
        mirror.upload_folder()
        assert mirror.finish().ok
    assert [o.key for o in mirror.store.list("exp/")] == ["exp/results/a.json"]
    assert "not uploading 2 symbolic link(s)" in caplog.text


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"path": "{outside}", "key": "exp/stolen"}, "is outside the mirrored folder"),
        ({"path": "{folder}/../outside.txt", "key": "exp/../outside.txt"}, "is not under 'exp/'"),
        ({"path": "{folder}/a.txt", "key": "other-experiment/a.txt"}, "is not under 'exp/'"),
        ({"path": "{folder}/a.txt", "key": "exp/b.txt"}, "is not the mirror's key for it"),
        ({"path": "{folder}/link", "key": "exp/link"}, "is a symbolic link"),
        ({"key": "exp/x"}, "has a damaged entry"),
    ],
)
def test_a_tampered_journal_is_refused_before_anything_uploads(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, record: dict[str, str], reason: str
) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the experiment's")
    (folder / "link").symlink_to(outside)
    entry = {k: v.format(outside=outside, folder=folder) for k, v in record.items()}
    good = {"op": "add", "id": "1", "group": "g", "stage": 0, "path": str(folder / "a.txt"), "key": "exp/a.txt"}
    bad = {"op": "add", "id": "2", "group": "g", "stage": 0, **entry}
    (folder / ".cloud_upload_journal.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    mirror = _mirror(s3_server, bucket, folder)
    with pytest.raises(CloudConfigError, match=reason):
        mirror.resume_pending()
    assert mirror.finish().uploaded == 0 and list(mirror.store.list("")) == []
