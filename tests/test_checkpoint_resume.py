"""TrainLoopCheckpoint: exact resume across real processes killed with SIGKILL, and bad input before training."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
from _exact import assert_same_run, load_result, run_child
from torch import nn, optim

from aitoolbox.checkpointing import CheckpointIncompatibleError, CheckpointManager, CheckpointNotFoundError
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

pytestmark = pytest.mark.slow


# 15 batches per epoch; iteration checkpoints every 5 iterations. "epoch:2" dies as epoch 2 (0-based) begins, after
# epoch 1's checkpoint; "iter:38" dies in epoch 2, after the checkpoint of iteration 35 (36 with grad_accumulation=3,
# the first optimizer-step boundary after 35).
_MATRIX = [
    ("global", 0), ("global", 2), ("loader-gen", 0), ("loader-gen", 2), ("sampler-gen", 0), ("weighted", 0),
    ("augment", 0), ("augment", 2), ("accum3", 0), ("bf16", 0),
]  # fmt: skip


@pytest.mark.parametrize("kill_at", ["epoch:2", "iter:38"])
@pytest.mark.parametrize(("config", "workers"), _MATRIX, ids=[f"{c}-w{w}" for c, w in _MATRIX])
def test_killed_run_resumes_exactly(tmp_path: Path, straight: Any, config: str, workers: int, kill_at: str) -> None:
    crashed = run_child(tmp_path, tmp_path / "unused.pt", "crash", kill_at, workers, config)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed_proc = run_child(tmp_path, tmp_path / "out.pt", "resume", "-", workers, config)
    assert resumed_proc.returncode == 0, resumed_proc.stderr
    resumed = load_result(tmp_path / "out.pt")
    mid_epoch = kill_at.startswith("iter")
    resumes_at = 30 if not mid_epoch else 36 if config == "accum3" else 35

    warned = "random draws inside the dataset (augmentation) in the workers are not replayed" in resumed_proc.stderr
    assert warned == (mid_epoch and workers > 0)  # the loop cannot know whether the dataset draws: it says so
    assert ("may differ from the interrupted one" in resumed_proc.stderr) == warned
    if mid_epoch and workers and config == "augment":
        # the workers' streams are not replayed for the rest of the interrupted epoch (as the warning said); the
        # resume still starts at the checkpoint
        assert resumed["seen"][0][0] == resumes_at + 1
        return
    assert_same_run(resumed, straight(config, workers), resumes_at)
    # it continued in the same experiment folder
    exp = Path(resumed["experiment_dir"])
    assert len(list((tmp_path / "proj").iterdir())) == 1 and exp.parent == tmp_path / "proj"
    assert CheckpointManager(exp / "checkpoint_model").load().info.epoch == 4


# ------------------------------------------------------------------ in-process behaviour and bad input


def _tl(root: Path, model: nn.Module | None = None, **kwargs: Any) -> TrainLoopCheckpoint:
    model = model or TinyClassifier()
    return TrainLoopCheckpoint(
        model, make_classification_loader(64, shuffle=True), make_classification_loader(32, seed=2), None,
        optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
        project_name="p", experiment_name="e", local_model_result_folder_path=root, device="cpu", **kwargs,
    )  # fmt: skip


def test_layout_hyperparams_and_created_root(tmp_path: Path) -> None:
    root = tmp_path / "does" / "not" / "exist"
    hyper = {"lr": 0.1, "betas": (0.9, 0.999)}
    tl = _tl(root, hyperparams=hyper)
    tl.fit(num_epochs=2)
    assert tl.experiment_dir.parent == root / "p" and tl.experiment_dir.name.startswith("e_")
    assert json.loads((tl.experiment_dir / "hyperparams.json").read_text()) == {"lr": 0.1, "betas": [0.9, 0.999]}
    assert hyper == {"lr": 0.1, "betas": (0.9, 0.999)}  # the user's dict is untouched
    infos = CheckpointManager(tl.checkpoint_dir).list()
    assert [(i.epoch, i.iteration) for i in infos] == [(1, 4), (2, 8)]
    assert infos[-1].metrics.keys() == {"loss", "val_loss"}
    assert sorted(infos[-1].parts) == ["callbacks", "loop", "model", "optimizer", "rng"]


def test_rm_subopt_keeps_the_best_and_the_newest(tmp_path: Path) -> None:
    tl = _tl(tmp_path, rm_subopt_local_models="val_loss", num_best_checkpoints_kept=1)
    tl.fit(num_epochs=5)
    infos = CheckpointManager(tl.checkpoint_dir).list()
    best_epoch = min(range(5), key=lambda e: tl.train_history["val_loss"][e]) + 1
    assert {i.epoch for i in infos} == {best_epoch, 5}


def test_damaged_newest_checkpoint_resumes_from_the_previous(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _tl(tmp_path)
    first.fit(num_epochs=3)
    newest = CheckpointManager(first.checkpoint_dir).list()[-1]
    (newest.path / "model.pt").write_bytes(b"\0" * 100)
    resumed = _tl(tmp_path)
    with caplog.at_level(logging.WARNING):
        resumed.fit(num_epochs=4, resume_from="latest")
    assert "falling back to ckpt-e0002" in caplog.text
    assert resumed.epochs_done == 4 and len(resumed.train_history["loss"]) == 4


def test_resume_from_each_kind_of_path(tmp_path: Path) -> None:
    first = _tl(tmp_path)
    first.fit(num_epochs=2)
    one = CheckpointManager(first.checkpoint_dir).list()[0].path
    for path, epoch in ((first.experiment_dir, 2), (first.checkpoint_dir, 2), (one, 1)):
        tl = _tl(tmp_path)
        tl.fit(num_epochs=3, resume_from=path)
        assert tl.experiment_dir == first.experiment_dir
        assert (
            len(tl.train_history["loss"]) == 3
            and tl.train_history["loss"][:epoch] == first.train_history["loss"][:epoch]
        )


def test_resume_when_already_done_trains_nothing(tmp_path: Path) -> None:
    _tl(tmp_path).fit(num_epochs=2)
    tl = _tl(tmp_path)
    tl.fit(num_epochs=2, resume_from="latest")
    assert (tl.epoch, tl.epochs_done, tl.iteration, tl.total_iteration_idx) == (1, 2, 8, 7)


def test_partial_checkpoint_needs_allow_partial(tmp_path: Path) -> None:
    first = _tl(tmp_path)
    first.fit(num_epochs=1)
    ckpt = CheckpointManager(first.checkpoint_dir).list()[-1].path
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["parts"]["optimizer"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointIncompatibleError, match=r"lacks the parts \['optimizer'\]"):
        _tl(tmp_path).fit(num_epochs=2, resume_from=ckpt)
    tl = _tl(tmp_path)
    tl.fit(num_epochs=2, resume_from=ckpt, allow_partial_resume=True)
    assert tl.epochs_done == 2


def test_different_architecture_names_the_keys(tmp_path: Path) -> None:
    _tl(tmp_path).fit(num_epochs=1)
    wider = TinyClassifier(hidden=32)
    with pytest.raises(CheckpointIncompatibleError, match=r"shape: net.0.bias \(16,\) vs \(32,\)"):
        _tl(tmp_path, model=wider).fit(num_epochs=2, resume_from="latest")
    other = nn.Sequential(nn.Linear(8, 3))
    with pytest.raises(CheckpointIncompatibleError, match=r"missing in the checkpoint: 0.bias, 0.weight; unexpected"):
        _tl(tmp_path, model=other).fit(num_epochs=2, resume_from="latest")


@pytest.mark.parametrize(
    ("resume_from", "message"),
    [
        ("missing-dir", "does not exist"),
        ("latest", "found no committed checkpoint of project 'p', experiment 'e'"),
        ("empty", "is neither a checkpoint"),
    ],
)
def test_bad_resume_from_fails_before_training(tmp_path: Path, resume_from: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    target = resume_from if resume_from == "latest" else tmp_path / resume_from
    tl = _tl(tmp_path / "root")
    with pytest.raises(CheckpointNotFoundError, match=message):
        tl.fit(num_epochs=1, resume_from=target)
    assert tl.iteration == 0 and not (tmp_path / "root" / "p").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iteration_save_freq": -1}, "iteration_save_freq must be an int >= 0"),
        ({"num_best_checkpoints_kept": 3}, "num_best_checkpoints_kept=3 needs a metric to rank checkpoints by"),
        ({"rm_subopt_local_models": 1.5}, "rm_subopt_local_models must be False, True or a history metric name"),
        ({"cloud_save_mode": "dropbox"}, "cloud_save_mode must be None, 'local', 's3' or 'gcs'"),
        ({"hyperparams": [("lr", 1)]}, "hyperparams must be a dict or None"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LoopConfigError, match=message):
        _tl(tmp_path, **kwargs)


def test_bad_names_and_root(tmp_path: Path) -> None:
    model = TinyClassifier()
    args = (model, make_classification_loader(8), None, None, optim.SGD(model.parameters(), 0.1), nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match="project_name must be a non-empty name"):
        TrainLoopCheckpoint(*args, project_name="a/b", experiment_name="e", local_model_result_folder_path=tmp_path)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LoopConfigError, match="is a file; give a folder path"):
        TrainLoopCheckpoint(*args, project_name="p", experiment_name="e", local_model_result_folder_path=a_file)


def test_ranking_metric_missing_from_history_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LoopConfigError, match="ranked by 'val_accuracy', which nothing in this run puts"):
        _tl(tmp_path, rm_subopt_local_models="val_accuracy").fit(num_epochs=1)
