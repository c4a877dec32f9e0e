"""Sharded checkpoints (layout 'dcp') in one process: committed, verified file by file, read whole or into targets,
saved in the background on a process group of their own; hostile metadata and names are refused. The multi-rank
cases (FSDP2 under torchrun, SIGKILL in a sharded commit) are in the repository's tests/test_fsdp.py."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from aitoolbox.checkpointing import (
    CheckpointCorruptError,
    CheckpointIncompatibleError,
    CheckpointInfo,
    CheckpointManager,
    GroupCollective,
)
from aitoolbox.checkpointing.sharded import SHARDS, merge_trees, read_metadata, split_tensors
from aitoolbox.checkpointing.testing import one_rank_group


def _sharded(value: float) -> dict[str, Any]:
    return {
        "model": {"w": torch.full((64, 32), value), "b": torch.arange(8.0) + value},
        "optimizer": [
            {
                "state": {"w": {"step": torch.tensor(value), "exp_avg": torch.ones(3)}},
                "param_groups": [{"lr": 0.1, "params": ["w"]}],
            }
        ],
    }


def test_a_sharded_checkpoint_is_committed_verified_and_read_whole(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2, background=False)
    for step in range(3):
        manager.save({"loop": {"step": step}}, sharded=_sharded(float(step)), epoch=step, iteration=step)
    infos = manager.list(verify=True)
    assert [i.name for i in infos] == ["ckpt-e0001-i000000001", "ckpt-e0002-i000000002"]  # retention as usual
    info = infos[-1]
    assert (info.layout, info.world_size, info.sharded_parts) == ("dcp", 1, ("model", "optimizer"))
    assert sorted(info.shards) == [".metadata", "__0_0.distcp"]
    staged = [p.relative_to(info.path).as_posix() for p in info.commit_stages()[0]]
    assert {"shards/.metadata", "shards/__0_0.distcp", "loop.pt", "sharded_rest.pt"} <= set(staged)
    loaded = manager.load(required=["model", "optimizer", "loop"])
    assert loaded["loop"] == {"step": 2} and "model" in loaded and "sharded_rest" not in loaded.parts
    assert torch.equal(loaded["model"]["w"], torch.full((64, 32), 2.0))
    (opt,) = loaded["optimizer"]  # tensors from the shards, the rest from the plain part: the saved structure
    assert opt["param_groups"] == [{"lr": 0.1, "params": ["w"]}]
    assert torch.equal(opt["state"]["w"]["step"], torch.tensor(2.0))


def test_read_sharded_loads_into_targets_in_place(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, background=False)
    manager.save({}, sharded=_sharded(5.0), epoch=1, iteration=1)
    target = _sharded(0.0)
    w = target["model"]["w"]
    states = manager.load().read_sharded(target)
    assert states["model"]["w"] is w and torch.equal(w, torch.full((64, 32), 5.0))  # loaded into the given tensor
    assert states["optimizer"][0]["param_groups"][0]["params"] == ["w"]
    fresh = _sharded(0.0)
    fresh["optimizer"][0]["state"] = {}  # e.g. an optimizer that never stepped: nowhere to load its moments into
    with pytest.raises(CheckpointIncompatibleError, match=r"no place for optimizer\.0\.state\.w\.exp_avg"):
        manager.load().read_sharded(fresh)
    assert manager.load().sharded is not None and manager.load().sharded.shapes("model")["w"].shape == (64, 32)  # type: ignore[union-attr]


def test_a_damaged_shard_is_named_and_loading_falls_back(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, background=False)
    manager.save({}, sharded=_sharded(1.0), epoch=1, iteration=1)
    manager.save({}, sharded=_sharded(2.0), epoch=2, iteration=2)
    shard = tmp_path / "ckpt-e0002-i000000002" / SHARDS / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert manager.damage() == ["ckpt-e0002-i000000002: shards/__0_0.distcp fails its SHA-256 check (damaged file)"]
    assert manager.load().info.name == "ckpt-e0001-i000000001"
    (tmp_path / "ckpt-e0001-i000000001" / SHARDS / ".metadata").unlink()
    with pytest.raises(CheckpointCorruptError, match=r"shards/\.metadata .* cannot be read"):
        manager.verify(manager.list()[0])


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def test_hostile_metadata_never_runs_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = CheckpointManager(tmp_path / "ckpts", background=False)
    manager.save({}, sharded=_sharded(1.0), epoch=1, iteration=1)
    info = manager.list()[0]
    metadata = info.path / SHARDS / ".metadata"
    metadata.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointCorruptError, match=r"posix\.system is not allowed|os\.system is not allowed"):
        read_metadata(info.path / SHARDS)
    manifest = json.loads((info.path / "manifest.json").read_text())  # a consistent manifest: verify() passes
    manifest["sharded"]["files"][".metadata"] = dict(zip(("sha256", "bytes"), _sha(metadata), strict=True))
    (info.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match="is not allowed in a checkpoint's metadata"):
        manager.load()["model"]
    assert not (tmp_path / "pwned").exists()


def _sha(path: Path) -> tuple[str, int]:
    import hashlib

    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden"])
def test_a_shard_name_outside_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    manager = CheckpointManager(tmp_path, background=False)
    manager.save({}, sharded=_sharded(1.0), epoch=1, iteration=1)
    path = tmp_path / "ckpt-e0001-i000000001" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["sharded"]["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match="not a plain name inside its folder"):
        CheckpointInfo.read(path.parent)
    assert manager.list() == []  # not listed as a committed checkpoint either


def test_split_and_merge_are_inverse() -> None:
    tree = {"a": [torch.ones(2), 3, (torch.zeros(1), "x")], "b": {"c": None, "d": torch.tensor(1.0)}, "e": []}
    tensors, rest = split_tensors(tree)
    assert tensors == {"a": {"0": tree["a"][0], "2": {"0": tree["a"][2][0]}}, "b": {"d": tree["b"]["d"]}}
    assert merge_trees(tensors, rest) == tree


@pytest.fixture
def group() -> Iterator[GroupCollective]:
    """A process group of one rank, and the sharded saves' own group in it."""
    with one_rank_group() as collective:
        yield collective


def test_a_background_sharded_save_blocks_only_for_the_copy(tmp_path: Path, group: GroupCollective) -> None:
    manager = CheckpointManager(tmp_path, collective=group)  # background by default
    state = _sharded(1.0)
    manager.save({"loop": {"step": 1}}, sharded=state, epoch=1, iteration=1)
    state["model"]["w"].fill_(99.0)  # training goes on at once: the checkpoint keeps the copy
    manager.wait()
    loaded = manager.load()
    assert (loaded.info.layout, loaded.info.world_size) == ("dcp", 1)
    assert torch.equal(loaded["model"]["w"], torch.full((64, 32), 1.0))
    target = _sharded(0.0)
    loaded.read_sharded(target, group)  # a collective read on the group
    assert torch.equal(target["model"]["w"], torch.full((64, 32), 1.0))
