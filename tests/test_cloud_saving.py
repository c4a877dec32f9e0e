"""cloud_save_mode='s3' (and 'gcs') in the tracked variants, against a real S3 server on loopback."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn, optim

from aitoolbox.checkpointing import CheckpointCorruptError, CheckpointManager
from aitoolbox.cloud import CloudAuthError, CloudConnectionError, CloudNotFoundError, S3Store
from aitoolbox.cloud.testing import MemoryStore, SeaweedServer
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import HalvesStrategy, TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint, TrainLoopCheckpointEndSave

pytestmark = pytest.mark.slow


def _args(model: nn.Module | None = None) -> tuple[Any, ...]:
    model = model or TinyClassifier()
    return (
        model,
        make_classification_loader(128, batch_size=32, shuffle=True),
        make_classification_loader(64, batch_size=32, seed=1),
        make_classification_loader(64, batch_size=32, seed=2),
        optim.Adam(model.parameters(), lr=1e-2),
        nn.CrossEntropyLoss(),
    )


def mirror_of(store: S3Store, experiment_dir: Path, prefix: str) -> dict[str, str]:
    """relative path -> sha256 of the objects under the experiment's key prefix."""
    base = store.key(f"{prefix}/{experiment_dir.name}/")
    return {o.key[len(base) :]: hashlib.sha256(store.read_bytes(o.key)).hexdigest() for o in store.list(base)}


def local_files(experiment_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(experiment_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in experiment_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(experiment_dir).parts)
    }


def test_checkpoint_end_save_mirrors_the_experiment_folder(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--hf-token", "hf_SECRET_1", "--epochs", "3"])
    hyper = {"lr": 0.01, "wandb_api_key": "SECRET_2", "data": "s3://AKIA:SECRET_3@host/bucket"}
    tl = TrainLoopCheckpointEndSave(
        *_args(),
        "proj",
        "exp",
        tmp_path,
        hyper,
        test_result_package=ClassificationResultPackage(),
        cloud_save_mode="s3",
        bucket_name=bucket,
        cloud_dir_prefix="team/runs",
        cloud_options={"endpoint_url": s3_server.endpoint_url, "create_bucket": True},
        device="cpu",
    )
    tl.fit(num_epochs=3)
    assert tl.upload_report.ok, str(tl.upload_report)
    store = S3Store(bucket, prefix="team/runs", endpoint_url=s3_server.endpoint_url)
    remote = mirror_of(store, tl.experiment_dir, "proj")
    assert remote == local_files(tl.experiment_dir)  # every file, same bytes
    for name in ("hyperparams.json", "environment.json", "summary.md"):  # no secret reached the bucket
        text = store.read_bytes(store.key(f"proj/{tl.experiment_dir.name}/{name}")).decode()
        assert "SECRET" not in text and "***" in text, name
    assert tl.hyperparams["wandb_api_key"] == "SECRET_2"  # the loop keeps the user's values
    summary = (tl.experiment_dir / "summary.md").read_text()  # where the run is, and what each place keeps
    assert f"uploaded to `s3://{bucket}/team/runs/proj/{tl.experiment_dir.name}/`" in summary
    assert "checkpoints: `checkpoint_model/` keeps every one; the bucket keeps every checkpoint" in summary
    assert {"summary.md", "model/model_state_dict.pt", "checkpoint_model/latest", "hyperparams.json"} <= remote.keys()
    assert (
        store.read_bytes(store.key(f"proj/{tl.experiment_dir.name}/checkpoint_model/latest"))
        == b"ckpt-e0003-i000000012\n"
    )


@pytest.fixture
def outage_server(tmp_path: Path) -> Iterator[SeaweedServer]:
    with SeaweedServer.serve(tmp_path / "seaweedfs") as server:
        yield server


class KillServerAt(Callback):
    def __init__(self, server: SeaweedServer, epoch: int, restart_after_s: float | None) -> None:
        super().__init__()
        self.server, self.at, self.restart_after_s = server, epoch, restart_after_s
        self.restarter: threading.Timer | None = None

    def on_epoch_begin(self) -> None:
        if self.train_loop_obj.epoch == self.at:
            self.server.kill()
            if self.restart_after_s is not None:
                self.restarter = threading.Timer(self.restart_after_s, self.server.start)
                self.restarter.start()


def test_server_killed_mid_training_then_back(
    outage_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    # SeaweedFS takes ~20 s (longer under load) to serve again after a restart: retry for up to ~2 min
    options = {
        "endpoint_url": outage_server.endpoint_url,
        "create_bucket": True,
        "backoff_s": 0.5,
        "max_backoff_s": 5,
        "max_attempts": 30,
    }
    tl = TrainLoopCheckpoint(
        *_args(), "p", "e", tmp_path, cloud_save_mode="s3", bucket_name=bucket, cloud_options=options, device="cpu"
    )
    killer = KillServerAt(outage_server, epoch=1, restart_after_s=2.0)
    tl.fit(num_epochs=4, callbacks=[killer])  # training does not wait for the server
    killer.restarter.join()
    assert tl.epochs_done == 4 and tl.upload_report.ok, str(tl.upload_report)
    store = S3Store(bucket, endpoint_url=outage_server.endpoint_url)
    assert mirror_of(store, tl.experiment_dir, "p") == local_files(tl.experiment_dir)


def test_server_down_until_the_end_then_resume_uploads_the_rest(
    outage_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"endpoint_url": outage_server.endpoint_url, "create_bucket": True, "max_attempts": 2, "backoff_s": 0.05}
    args = _args()
    tl = TrainLoopCheckpoint(
        *args,
        "p",
        "e",
        tmp_path,
        cloud_save_mode="s3",
        bucket_name=bucket,
        cloud_options=options,
        device="cpu",
        rm_subopt_local_models=True,
        num_best_checkpoints_kept=1,
    )
    with caplog.at_level(logging.WARNING):
        tl.fit(num_epochs=3, callbacks=[KillServerAt(outage_server, epoch=1, restart_after_s=None)])
    report = tl.upload_report
    assert not report.ok and report.pending and ".cloud_upload_journal.jsonl" in str(report)
    assert "cloud: NOT everything reached" in caplog.text
    # nothing lost: retention kept the checkpoints that did not reach the bucket
    assert len([p for p in tl.checkpoint_dir.iterdir() if p.name.startswith("ckpt")]) == 3

    outage_server.start()
    options = {"endpoint_url": outage_server.endpoint_url}  # default retries: a restarted server may answer 500 a while
    resumed = TrainLoopCheckpoint(
        *_args(), "p", "e", tmp_path, cloud_save_mode="s3", bucket_name=bucket, cloud_options=options, device="cpu"
    )
    resumed.fit(num_epochs=3, resume_from="latest")  # nothing left to train; the pending uploads go up
    assert resumed.upload_report.ok, str(resumed.upload_report)
    store = S3Store(bucket, endpoint_url=outage_server.endpoint_url)
    remote = mirror_of(store, tl.experiment_dir, "p")
    assert (
        store.read_bytes(store.key(f"p/{tl.experiment_dir.name}/checkpoint_model/latest")) == b"ckpt-e0003-i000000012\n"
    )
    assert {k: v for k, v in local_files(tl.experiment_dir).items()}.items() <= remote.items()


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "sharded"])
def test_resume_from_the_bucket_after_the_local_folder_is_gone(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path, sharded: bool
) -> None:
    """Also for a sharded checkpoint (a strategy whose ranks write their share: its DCP files go up and come back)."""
    options = {"endpoint_url": s3_server.endpoint_url, "create_bucket": True}
    strategy = {"strategy": HalvesStrategy()} if sharded else {}
    first = TrainLoopCheckpoint(
        *_args(),
        "p",
        "e",
        tmp_path / "a",
        cloud_save_mode="s3",
        bucket_name=bucket,
        cloud_options=options,
        device="cpu",
        **strategy,
    )
    first.fit(num_epochs=2)
    assert first.upload_report.ok
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    uploaded = mirror_of(store, first.experiment_dir, "p")
    assert any("/shards/__0_0.distcp" in key for key in uploaded) == sharded
    shutil.rmtree(tmp_path / "a")
    torch.manual_seed(7)
    resumed = TrainLoopCheckpoint(
        *_args(),
        "p",
        "e",
        tmp_path / "a",
        cloud_save_mode="s3",
        bucket_name=bucket,
        cloud_options=options,
        device="cpu",
        **({"strategy": HalvesStrategy()} if sharded else {}),
    )
    resumed.fit(num_epochs=3, resume_from="latest")
    assert resumed.experiment_dir.name == first.experiment_dir.name
    downloaded = CheckpointManager(resumed.experiment_dir / "checkpoint_model").list(verify=True)
    assert downloaded[0].layout == ("dcp" if sharded else "plain")
    assert resumed.train_history["loss"][:2] == first.train_history["loss"] and resumed.epochs_done == 3
    assert resumed.upload_report.ok


@pytest.mark.parametrize(
    ("options", "env", "error", "message"),
    [
        (
            {"endpoint_url": "http://127.0.0.1:9"},
            {},
            CloudConnectionError,
            "cannot reach the S3 endpoint http://127.0.0.1:9",
        ),
        ({}, {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, CloudAuthError, "no AWS credentials found"),
        ({}, {}, CloudNotFoundError, "does not exist at .*create_bucket=True"),
    ],
)
def test_preflight_fails_at_construction(
    s3_server: SeaweedServer,
    aws_env: None,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    env: dict[str, str | None],
    error: type,
    message: str,
) -> None:
    for k, v in env.items():
        monkeypatch.delenv(k) if v is None else monkeypatch.setenv(k, v)
    opts = {"endpoint_url": s3_server.endpoint_url, **options}
    with pytest.raises(error, match=message):
        TrainLoopCheckpoint(*_args(), "p", "e", tmp_path, cloud_save_mode="s3", bucket_name=bucket, cloud_options=opts)
    assert not (tmp_path / "p").exists()


def test_every_store_option_is_reachable_through_cloud_options(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    """cloud_options used to refuse connect_timeout and read_timeout, which S3Store takes ("unknown keys")."""
    options = {"endpoint_url": s3_server.endpoint_url, "create_bucket": True, "connect_timeout": 5, "read_timeout": 30}
    tl = TrainLoopCheckpoint(
        *_args(), "p", "e", tmp_path, cloud_save_mode="s3", bucket_name=bucket, cloud_options=options, device="cpu"
    )
    config = tl.cloud_store.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 30)


def test_gcs_mode_goes_through_an_s3_compatible_endpoint(
    s3_server: SeaweedServer, aws_env: None, bucket: str, tmp_path: Path
) -> None:
    options = {"endpoint_url": s3_server.endpoint_url, "create_bucket": True}
    tl = TrainLoopCheckpoint(
        *_args(), "p", "e", tmp_path, cloud_save_mode="gcs", bucket_name=bucket, cloud_options=options, device="cpu"
    )
    assert tl.cloud_store.endpoint_url == s3_server.endpoint_url
    tl.fit(num_epochs=1)
    assert tl.upload_report.ok
    from aitoolbox.torchtrain._composition.cloud import make_store

    with pytest.raises(CloudConnectionError, match="storage.googleapis.com"):  # the default endpoint, unreachable here
        make_store("gcs", bucket, "", {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backoff_s": -1}, r"backoff_s must be a number >= 0.0, got -1"),
        ({"backoff_s": "x"}, r"backoff_s must be a number >= 0.0, got 'x'"),
        ({"max_attempts": 2.5}, r"max_attempts must be an int >= 1, got 2.5"),
        ({"max_backoff_s": float("nan")}, r"max_backoff_s must be a number"),
        ({"create_bucket": "no"}, r"cloud_options\['create_bucket'\] must be True or False, got 'no'"),
        ({"flush_timeout_s": -5}, r"flush_timeout_s'\] must be a number of seconds >= 0"),
    ],
)
def test_bad_cloud_option_values_are_refused_before_any_request(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """A bad value used to reach the upload thread (which died; fit then waited its whole flush timeout) or, for
    create_bucket='no', to create the bucket."""
    from aitoolbox.cloud import CloudConfigError

    with pytest.raises(CloudConfigError, match=message):
        TrainLoopCheckpoint(
            *_args(),
            "p",
            "e",
            tmp_path,
            cloud_save_mode="s3",
            bucket_name="ok-bucket",
            cloud_options={"endpoint_url": "http://127.0.0.1:9", **options},
        )


def test_bad_cloud_arguments(tmp_path: Path) -> None:
    from aitoolbox.cloud import CloudConfigError

    with pytest.raises(CloudConfigError, match="cloud_save_mode='s3' needs bucket_name"):
        TrainLoopCheckpoint(*_args(), "p", "e", tmp_path, cloud_save_mode="s3")
    with pytest.raises(CloudConfigError, match=r"cloud_options has unknown keys \['endpoint'\]"):
        TrainLoopCheckpoint(
            *_args(), "p", "e", tmp_path, cloud_save_mode="s3", bucket_name="ok-bucket", cloud_options={"endpoint": "x"}
        )


def test_local_mode_never_touches_the_network(tmp_path: Path) -> None:
    code = (
        "import sys, os\n"
        "os.environ['AWS_ENDPOINT_URL'] = 'http://127.0.0.1:9'\n"
        "from torch import nn, optim\n"
        "from aitoolbox.loop.testing import HalvesStrategy, TinyClassifier, make_classification_loader as loader\n"
        "from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint\n"
        "m = TinyClassifier()\n"
        "tl = TrainLoopCheckpoint(m, loader(32), None, None, optim.SGD(m.parameters(), 0.1), nn.CrossEntropyLoss(),\n"
        f"                         'p', 'e', {str(tmp_path)!r})\n"
        "tl.fit(num_epochs=1)\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ------------------------------------------------------------------ a hostile or damaged bucket (a store double: a
# real server refuses keys with ``../``, AWS S3 accepts them)


def _bucket_of_one_checkpoint(tmp_path: Path) -> tuple[MemoryStore, str, str]:
    """A real checkpoint (trained here) copied into a store double as the variants upload it."""
    tl = TrainLoopCheckpoint(*_args(), "p", "e", tmp_path / "made", device="cpu")
    tl.fit(num_epochs=1)
    ckpt = CheckpointManager(tl.checkpoint_dir).list()[-1]
    base = f"p/{tl.experiment_dir.name}/checkpoint_model/"
    store = MemoryStore({f"{base}{ckpt.name}/{p.name}": p.read_bytes() for p in ckpt.path.iterdir()})
    store.put(f"{base}latest", f"{ckpt.name}\n".encode())
    return store, base, ckpt.name


def _written(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_hostile_latest_pointer_cannot_write_outside_the_results_root(tmp_path: Path) -> None:
    from aitoolbox.torchtrain._composition.cloud import download_latest_checkpoint

    store, base, name = _bucket_of_one_checkpoint(tmp_path)
    hostile = "../../../../escaped"
    for key in [k for k in store.objects if f"/{name}/" in k]:  # the checkpoint's files under the hostile name too
        store.put(key.replace(f"/{name}/", f"/{hostile}/"), store.objects[key])
    store.put(f"{base}latest", f"{hostile}\n".encode())
    root = tmp_path / "sandbox" / "results"
    with pytest.raises(CheckpointCorruptError, match=r"latest names '\.\./\.\./\.\./\.\./escaped'"):
        download_latest_checkpoint(store, root, "p", "e")
    assert _written(tmp_path / "sandbox") == set()  # nothing outside the root, nor inside it

    store.put(f"{base}latest", b"\xff\xfe not text\n")  # a damaged pointer: a clear error, not UnicodeDecodeError
    with pytest.raises(CheckpointCorruptError, match="is not UTF-8 text"):
        download_latest_checkpoint(store, root, "p", "e")


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path: Path) -> None:
    from aitoolbox.torchtrain._composition.cloud import download_latest_checkpoint

    store, base, name = _bucket_of_one_checkpoint(tmp_path)
    manifest = json.loads(store.objects[f"{base}{name}/manifest.json"])
    manifest["parts"]["model"]["file"] = "../../../../outside.pt"
    store.put(f"{base}{name}/manifest.json", json.dumps(manifest).encode())
    store.put(f"{base}{name}/../../../../outside.pt", store.objects[f"{base}{name}/model.pt"])
    root = tmp_path / "sandbox" / "results"
    with pytest.raises(CheckpointCorruptError, match=r"part 'model' 'file' names '\.\./\.\./\.\./\.\./outside\.pt'"):
        download_latest_checkpoint(store, root, "p", "e")
    assert {Path(p).name for p in _written(tmp_path / "sandbox")} == {"manifest.json"}  # only the manifest, inside
    assert all(not p.startswith("..") for p in _written(root))


def test_listing_keys_outside_the_experiment_folders_are_ignored(tmp_path: Path) -> None:
    from aitoolbox.torchtrain._composition.cloud import download_latest_checkpoint

    store, _, _ = _bucket_of_one_checkpoint(tmp_path)
    for key in list(store.objects):
        store.put(key.replace("p/e_", "p/e_x/../../../"), store.objects.pop(key))  # a newer, nested "experiment"
    assert download_latest_checkpoint(store, tmp_path / "sandbox", "p", "e") is None
    assert not (tmp_path / "sandbox").exists()
