"""SIGKILL a real process at every stage of a commit; the survivor always loads a complete checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from aitoolbox.checkpointing import CheckpointManager

CHILD = textwrap.dedent(
    """
    import os, shutil, signal, sys
    import torch
    import aitoolbox.checkpointing._fs as fs
    import aitoolbox.checkpointing.manager as manager_module
    from aitoolbox.checkpointing import CheckpointManager

    directory, stage = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def state(v):
        return {"model": {"w": torch.full((256, 256), float(v))}, "optimizer": {"step": torch.tensor(v)}}

    manager = CheckpointManager(directory, keep_last=1)
    manager.save(state(0), epoch=0, iteration=0)
    manager.wait()

    if stage == "writing":  # die halfway through the second part file
        original_write = fs.HashingWriter.write
        def write(self, data):
            if self.size > 100_000:
                die()
            return original_write(self, data)
        fs.HashingWriter.write = write
    elif stage == "before_rename":
        os.rename = die
    elif stage == "after_rename_before_pointer":
        original = manager_module.atomic_write_bytes
        manager_module.atomic_write_bytes = lambda path, data: die() if path.name == "latest" else original(path, data)
    elif stage == "pointer_written_not_replaced":
        original_replace = os.replace
        os.replace = lambda src, dst: die() if str(dst).endswith("latest") else original_replace(src, dst)
    elif stage == "during_retention":
        shutil.rmtree = die
    elif stage == "midway_through_retention":  # the deletion has removed the manifest (and no more) when killed
        def rmtree(path, *args, **kwargs):
            os.unlink(os.path.join(path, "manifest.json"))
            die()
        shutil.rmtree = rmtree
    manager.save(state(1), epoch=1, iteration=1)
    manager.wait()
    print("survived")
    """
)

STAGES = {
    # stage -> epoch that `latest`-first loading must return
    "writing": 0,
    "before_rename": 0,
    "after_rename_before_pointer": 0,
    "pointer_written_not_replaced": 0,
    "during_retention": 1,
    "midway_through_retention": 1,
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_sigkill_during_commit_never_leaves_an_unloadable_latest(tmp_path: Path, stage: str) -> None:
    directory = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(directory), stage], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr

    manager = CheckpointManager(directory, keep_last=1)
    loaded = manager.load(required=["model", "optimizer"])
    assert loaded.info.epoch == STAGES[stage]
    assert torch.equal(loaded["model"]["w"], torch.full((256, 256), float(STAGES[stage])))
    assert all(not info.name.startswith(".") for info in manager.list())

    manager.save({"model": {"w": torch.ones(1)}, "optimizer": {}}, epoch=2, iteration=2)  # and training goes on
    manager.wait()
    assert manager.load().info.epoch == 2
    assert not [p for p in directory.iterdir() if p.name.startswith((".tmp-", ".trash-"))]  # the killed one's swept
    assert all((p / "manifest.json").is_file() for p in directory.iterdir() if p.is_dir())  # no half-deleted folder
