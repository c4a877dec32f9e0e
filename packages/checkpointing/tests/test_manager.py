from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import random
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import aitoolbox.checkpointing
from aitoolbox.checkpointing import (
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointIncompatibleError,
    CheckpointInfo,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointWriteError,
    SnapshotBuffers,
    capture_rng_state,
    check_plain,
    restore_rng_state,
)


def _state(value: float) -> dict[str, object]:
    return {
        "model": {"w": torch.full((3, 4), value), "b": torch.zeros(4)},
        "optimizer": {"state": {0: {"step": torch.tensor(value)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "loop": {"epoch": int(value), "history": {"loss": [1.0, float("nan")]}},
    }


@pytest.fixture(params=[True, False], ids=["background", "foreground"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointManager:
    return CheckpointManager(tmp_path / "ckpt", background=request.param)


def test_commit_layout_and_manifest_checksums(manager: CheckpointManager) -> None:
    name = manager.save(_state(1.0), epoch=1, iteration=10, metrics={"val_loss": 0.5, "note": "x"}, meta={"k": 1})
    manager.wait()
    path = manager.directory / name
    assert sorted(os.listdir(manager.directory)) == [name, "latest"]
    assert manager.latest_name() == name
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["epoch"] == 1 and manifest["iteration"] == 10 and manifest["metrics"] == {"val_loss": 0.5}
    assert sorted(manifest["parts"]) == ["loop", "model", "optimizer"]
    for entry in manifest["parts"].values():
        data = (path / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    loaded = manager.load(required=["model", "optimizer", "loop"])
    assert torch.equal(loaded["model"]["w"], torch.full((3, 4), 1.0))
    assert loaded["optimizer"]["state"][0]["step"].item() == 1.0
    assert loaded.info.meta == {"k": 1} and loaded["loop"]["history"]["loss"][0] == 1.0


def test_saved_state_is_a_snapshot_not_a_reference(manager: CheckpointManager) -> None:
    state = _state(1.0)
    manager.save(state, epoch=1, iteration=1)
    state["model"]["w"].add_(100)  # training goes on while the background thread writes
    assert torch.equal(manager.load()["model"]["w"], torch.full((3, 4), 1.0))


def test_keep_last(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for i in range(5):
        manager.save(_state(i), epoch=i, iteration=i)
    manager.wait()
    assert [i.epoch for i in manager.list()] == [3, 4]


@pytest.mark.parametrize(("mode", "expected"), [("min", [1, 2, 5]), ("max", [3, 4, 5])])
def test_keep_best_by_monitored_metric(tmp_path: Path, mode: str, expected: list[int]) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=2, monitor="val_loss", mode=mode)
    losses = [0.9, 0.1, 0.2, 0.95, 0.97, 0.5]
    for i, loss in enumerate(losses):
        manager.save(_state(i), epoch=i, iteration=i, metrics={"val_loss": loss})
    manager.wait()
    assert [i.epoch for i in manager.list()] == expected  # the best two, plus the newest for resuming


def test_retention_never_runs_before_a_commit(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, background=False)
    manager.save(_state(0), epoch=0, iteration=0)
    with pytest.raises(CheckpointConfigError):
        manager.save({"model": object()}, epoch=1, iteration=1)  # refused before anything is written
    assert [i.epoch for i in manager.list()] == [0]


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_newest_falls_back_to_the_previous_good(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    for i in range(3):
        manager.save(_state(i), epoch=i, iteration=i)
    manager.wait()
    newest = manager.directory / manager.latest_name() / "model.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(bytes(data))
    else:
        newest.unlink()
    with caplog.at_level(logging.WARNING, logger="aitoolbox.checkpointing"):
        loaded = manager.load(required=["model"])
    assert loaded.info.epoch == 1
    assert "ckpt-e0002-i000000002: part 'model'" in caplog.text and "falling back to ckpt-e0001" in caplog.text
    with pytest.raises(CheckpointCorruptError, match="part 'model'"):
        manager.load("ckpt-e0002-i000000002")  # asked for explicitly: no silent substitution
    assert [i.epoch for i in manager.list(verify=True)] == [0, 1]


def test_every_checkpoint_damaged_or_none(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "c")
    with pytest.raises(CheckpointNotFoundError, match="no committed checkpoint"):
        manager.load()
    manager.save(_state(0), epoch=0, iteration=0)
    manager.wait()
    (manager.directory / manager.latest_name() / "loop.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointNotFoundError, match="committed checkpoint.* every one is damaged: ckpt-"):
        manager.load()


def test_latest_pointer_to_a_missing_checkpoint_is_survived(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(0), epoch=0, iteration=0)
    manager.save(_state(1), epoch=1, iteration=1)
    manager.wait()
    (manager.directory / "latest").write_text("ckpt-does-not-exist\n")
    assert manager.load().info.epoch == 1


def test_temporaries_are_ignored_and_cleaned(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    stale = tmp_path / ".tmp-ckpt-e0009-i000000009-deadbeef"
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"half")
    assert manager.list() == []
    manager.save(_state(0), epoch=0, iteration=0)
    manager.wait()
    assert not stale.exists() and len(manager.list()) == 1


def test_missing_required_part(manager: CheckpointManager) -> None:
    manager.save({"model": {"w": torch.ones(1)}}, epoch=0, iteration=0)
    with pytest.raises(CheckpointIncompatibleError, match=r"lacks the parts \['optimizer'\] .*allow_partial=True"):
        manager.load(required=["model", "optimizer"])
    assert "optimizer" not in manager.load(required=["model", "optimizer"], allow_partial=True)


def test_loading_refuses_pickled_objects_even_with_matching_checksums(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(0), epoch=0, iteration=0)
    manager.wait()
    ckpt = manager.directory / manager.latest_name()
    evil = ckpt / "model.pt"
    torch.save({"w": Path("/etc/passwd")}, evil)  # an arbitrary object: needs full unpickling
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = evil.read_bytes()
    manifest["parts"]["model"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match="cannot be loaded"):
        manager.load(ckpt.name, required=["model"])
    with pytest.raises(CheckpointNotFoundError, match="every one is damaged: .*cannot be loaded"):
        manager.load(required=["model"])  # the newest good one: there is none


def test_check_plain_names_the_offender() -> None:
    with pytest.raises(CheckpointConfigError, match=r"state\['callbacks'\]\['es'\]\[1\] is a pathlib.*PosixPath"):
        check_plain({"callbacks": {"es": [1, Path("x")]}})
    with pytest.raises(CheckpointConfigError, match="key of type"):
        check_plain({object(): 1})
    assert pickle.loads(pickle.dumps(check_plain({"k": [1.0]}))) == {"k": [1.0]}


def test_check_plain_converts_numpy() -> None:
    np = pytest.importorskip("numpy")  # not a dependency of this package
    out = check_plain({"a": np.float64(1.5), "b": np.arange(3), "c": (1, "x", None)})
    assert out["a"] == 1.5 and type(out["a"]) is float
    assert torch.equal(out["b"], torch.arange(3)) and out["c"] == (1, "x", None)


def test_snapshot_buffers_are_reused() -> None:
    buffers = SnapshotBuffers()
    t = torch.randn(64, 64)
    first = buffers.snapshot({"w": t}, "model")["w"]
    t.add_(1)
    second = buffers.snapshot({"w": t}, "model")["w"]
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, t)
    assert buffers.snapshot({"w": torch.zeros(3)}, "model")["w"].shape == (3,)  # shape change: new buffer


def test_background_failure_is_raised_not_dropped(tmp_path: Path) -> None:
    def on_commit(info: CheckpointInfo) -> None:
        if info.epoch == 1:
            raise OSError(errno.EIO, "the upload hook failed")

    manager = CheckpointManager(tmp_path / "ckpt", on_commit=on_commit)
    manager.save(_state(0), epoch=0, iteration=0)
    manager.wait()
    manager.save(_state(1), epoch=1, iteration=1)
    with pytest.raises(CheckpointWriteError, match="saving a checkpoint into .* failed: .*the upload hook failed"):
        manager.wait()
    manager.save(_state(2), epoch=2, iteration=2)  # and saving works again
    manager.wait()
    assert manager.load().info.epoch == 2


def test_a_folder_that_cannot_be_written_is_refused_at_the_save(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(_state(0), epoch=0, iteration=0)
    manager.wait()
    (tmp_path / "ckpt").rename(tmp_path / "moved")
    (tmp_path / "ckpt").write_text("a file where the checkpoint directory must be")  # the write cannot happen
    with pytest.raises(CheckpointWriteError, match="is not a folder; "):
        manager.save(_state(1), epoch=1, iteration=1)
    (tmp_path / "ckpt").unlink()
    (tmp_path / "moved").rename(tmp_path / "ckpt")
    assert manager.load().info.epoch == 0  # the earlier checkpoint is untouched
    manager.save(_state(2), epoch=2, iteration=2)  # and saving works again
    manager.wait()
    assert manager.load().info.epoch == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": 0}, "keep_last must be a positive int or None"),
        ({"keep_best": 2}, "keep_best=2 needs a metric to rank checkpoints by"),
        ({"keep_best": -1}, "keep_best must be an int >= 0"),
        ({"keep_best": 1, "monitor": "val_loss", "mode": "lowest"}, "mode must be 'min' or 'max'"),
    ],
)
def test_config_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CheckpointConfigError, match=message):
        CheckpointManager(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_directory_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointConfigError, match="exists and is not a directory"):
        CheckpointManager(f)


def test_rng_round_trip_loads_weights_only(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    manager = CheckpointManager(tmp_path, background=False)
    manager.save({"rng": capture_rng_state()}, epoch=0, iteration=0)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(manager.load()["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_public_api_is_pinned() -> None:
    assert sorted(aitoolbox.checkpointing.__all__) == [
        "CheckpointConfigError",
        "CheckpointCorruptError",
        "CheckpointError",
        "CheckpointIncompatibleError",
        "CheckpointInfo",
        "CheckpointManager",
        "CheckpointNotFoundError",
        "CheckpointWriteError",
        "GroupCollective",
        "LoadedCheckpoint",
        "ShardedState",
        "SnapshotBuffers",
        "__version__",
        "capture_rng_state",
        "check_plain",
        "first_non_finite",
        "restore_rng_state",
    ]


def test_rng_round_trip_without_numpy_state(tmp_path: Path) -> None:
    random.seed(1)
    torch.manual_seed(3)
    state = capture_rng_state()
    state["numpy"] = None  # as captured where numpy is not installed
    expected = (random.random(), torch.rand(1))
    random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(state)
    assert random.random() == expected[0] and torch.equal(torch.rand(1), expected[1])


def test_on_commit_and_may_delete_hooks(tmp_path: Path) -> None:
    committed: list[str] = []
    uploaded: set[str] = set()

    def on_commit(info: Any) -> None:
        assert (info.path / "manifest.json").is_file() and info.path.parent.joinpath(
            "latest"
        ).read_text().strip() == info.name
        committed.append(info.name)

    manager = CheckpointManager(tmp_path, keep_last=1, on_commit=on_commit, may_delete=lambda i: i.name in uploaded)
    for i in range(3):
        manager.save(_state(i), epoch=i, iteration=i)
    manager.wait()
    assert committed == ["ckpt-e0000-i000000000", "ckpt-e0001-i000000001", "ckpt-e0002-i000000002"]
    assert len(manager.list()) == 3  # nothing uploaded yet: retention keeps them
    uploaded.update(committed[:2])
    manager.save(_state(3), epoch=3, iteration=3)
    manager.wait()
    assert [i.epoch for i in manager.list()] == [2, 3]  # 2 is not uploaded yet: kept until it is

    def broken(info: Any) -> None:
        raise RuntimeError("uploader gone")

    failing = CheckpointManager(tmp_path / "b", on_commit=broken)
    failing.save(_state(0), epoch=0, iteration=0)
    with pytest.raises(CheckpointWriteError, match="uploader gone"):
        failing.wait()


def test_adopt_makes_a_verified_copy_latest_and_refuses_a_partial_one(tmp_path: Path) -> None:
    import shutil

    from aitoolbox.checkpointing import CheckpointCorruptError
    from aitoolbox.checkpointing.layout import LATEST, MANIFEST, is_checkpoint, pointer_bytes, read_pointer

    source = CheckpointManager(tmp_path / "source", background=False)
    first = source.save({"model": _state(1.0)}, epoch=0, iteration=1)
    second = source.save({"model": _state(2.0)}, epoch=1, iteration=2)
    info = next(i for i in source.list() if i.name == second)
    assert info.commit_stages() == [[info.path / "model.pt"], [info.path / MANIFEST]]
    assert read_pointer(pointer_bytes(second)) == second and is_checkpoint(info.path)

    copy = CheckpointManager(tmp_path / "copy", background=False)
    for name in (first, second):  # copied as a download would, without a pointer
        shutil.copytree(tmp_path / "source" / name, tmp_path / "copy" / name)
    assert copy.latest_name() is None
    assert copy.adopt(first).name == first and copy.latest_name() == first
    (tmp_path / "copy" / second / "model.pt").write_bytes(b"half")  # an interrupted download
    with pytest.raises(CheckpointCorruptError, match="model"):
        copy.adopt(second)
    assert (tmp_path / "copy" / LATEST).read_bytes() == pointer_bytes(first)  # left as it was


def _two_checkpoints(tmp_path: Path) -> tuple[CheckpointManager, Path]:
    manager = CheckpointManager(tmp_path / "ckpt", background=False)
    manager.save(_state(0), epoch=0, iteration=0)
    newest = manager.directory / manager.save(_state(1), epoch=1, iteration=1)
    return manager, newest


def _edit_manifest(path: Path, edit: Any) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["parts"]["model"].pop("sha256"), "part 'model' has no SHA-256"),
        (lambda m: m["parts"]["model"].pop("file"), "part 'model' 'file' names None"),
        (lambda m: m["parts"]["model"].update(file="../../model.pt"), "'file' names '../../model.pt'"),
        (lambda m: m["parts"]["model"].update(bytes="12"), "part 'model' has no byte count"),
        (lambda m: m["parts"].update(model="model.pt"), "part 'model' is str, not an entry"),
        (lambda m: m.update(parts=["model.pt"]), "has no readable manifest.json"),
        (lambda m: m.update(name="../../elsewhere"), "'name' names '../../elsewhere'"),
    ],
)
def test_a_damaged_manifest_entry_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: Any, named: str
) -> None:
    manager, newest = _two_checkpoints(tmp_path)
    _edit_manifest(newest, edit)
    with pytest.raises(CheckpointCorruptError, match=re.escape(named)):
        CheckpointInfo.read(newest)
    with caplog.at_level(logging.WARNING):
        assert manager.load().info.epoch == 0  # the previous verified one, as promised
    assert "falling back" in caplog.text and named in caplog.text


@pytest.mark.parametrize(
    ("pointer", "warned"),
    [(b"\xff\xfe\x00garbage", "is not UTF-8 text"), (b"../../../escaped\n", "names '../../../escaped'")],
)
def test_a_damaged_latest_pointer_falls_back_to_the_newest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pointer: bytes, warned: str
) -> None:
    manager, newest = _two_checkpoints(tmp_path)
    (manager.directory / "latest").write_bytes(pointer)
    with pytest.raises(CheckpointCorruptError, match=re.escape(warned)):
        manager.latest_name()
    with caplog.at_level(logging.WARNING):
        assert manager.load().info.name == newest.name
    assert warned in caplog.text
    with pytest.raises(CheckpointCorruptError, match="not a plain name"):
        manager.adopt("../ckpt")


def test_a_checkpoint_retired_by_another_process_while_loading_is_skipped(tmp_path: Path) -> None:
    """A reader racing another process's retention: the checkpoint it verified is deleted before its parts load.
    The load tries again with what is there now instead of reporting the deleted one as damaged."""
    manager, newest = _two_checkpoints(tmp_path)
    writer = CheckpointManager(manager.directory, keep_last=1, background=False)

    class Racing(CheckpointManager):
        raced = False

        @staticmethod
        def verify(info: CheckpointInfo) -> None:
            info.verify()
            if not Racing.raced:  # the other process commits a newer one and retires the rest, right now
                Racing.raced = True
                writer.save(_state(2), epoch=2, iteration=2)

    loaded = Racing(manager.directory).load(required=["model"])
    assert loaded.info.epoch == 2 and torch.equal(loaded["model"]["w"], torch.full((3, 4), 2.0))
    assert not newest.exists()


def test_the_sweep_leaves_a_live_writers_temporary_folder_alone(tmp_path: Path) -> None:
    manager, _ = _two_checkpoints(tmp_path)
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        theirs = manager.directory / f".tmp-ckpt-e0009-i000000009-abcd1234@{host}@{live.pid}"
        dead = manager.directory / f".tmp-ckpt-e0008-i000000008-abcd1234@{host}@{_dead_pid()}"
        old_format = manager.directory / ".tmp-ckpt-e0007-i000000007-abcd1234"
        for folder in (theirs, dead, old_format):
            folder.mkdir()
            (folder / "model.pt").write_bytes(b"in flight")
        manager.save(_state(3), epoch=3, iteration=3)
        assert theirs.is_dir() and not dead.exists() and not old_format.exists()
    finally:
        live.communicate(b"")


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)
