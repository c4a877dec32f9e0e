"""TrainLoopCheckpoint: exact resume across real processes killed with SIGKILL, and bad input before training."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from _exact import assert_same_run, load_result, run_child
from torch import nn, optim

from aitoolbox.checkpointing import (
    CheckpointIncompatibleError,
    CheckpointManager,
    CheckpointNotFoundError,
    first_non_finite,
)
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

pytestmark = pytest.mark.slow


# 15 batches per epoch; iteration checkpoints every 5 iterations. "epoch:2" dies as epoch 2 (0-based) begins, after
# epoch 1's checkpoint; "iter:38" dies in epoch 2, after the checkpoint of iteration 35 (36 with grad_accumulation=3,
# the first optimizer-step boundary after 35).
_MATRIX = [
    ("global", 0),
    ("global", 2),
    ("loader-gen", 0),
    ("loader-gen", 2),
    ("sampler-gen", 0),
    ("weighted", 0),
    ("augment", 0),
    ("augment", 2),
    ("accum3", 0),
    ("bf16", 0),
]


@pytest.mark.timeout(900)  # three trainings in child processes: 15-20 s here, over 300 s seen on an overloaded machine
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
        model,
        make_classification_loader(64, shuffle=True),
        make_classification_loader(32, seed=2),
        None,
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        project_name="p",
        experiment_name="e",
        local_model_result_folder_path=root,
        device="cpu",
        **kwargs,
    )


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
    from aitoolbox.cloud import CloudConfigError

    # a cloud setting is refused by the cloud package, with its own error (both are ValueErrors)
    expected = CloudConfigError if "cloud_save_mode" in kwargs else LoopConfigError
    with pytest.raises(expected, match=message) as caught:
        _tl(tmp_path, **kwargs)
    assert isinstance(caught.value, ValueError)


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


def test_a_second_writer_of_one_experiment_is_refused_until_the_first_is_gone(tmp_path: Path, straight: Any) -> None:
    """Two processes resuming one experiment would both exit 0 and the last would win: the second is refused before
    it trains, naming the first; once the first is SIGKILLed its lock is gone and the resume is exact."""
    import os
    import subprocess
    import sys
    import time

    from _exact import CHILD

    first = subprocess.Popen(
        [sys.executable, str(CHILD), str(tmp_path), "-", "straight"],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AITB_TEST_PAUSE_AT": f"22:{tmp_path}"},
    )
    try:
        while not (tmp_path / "paused").exists():  # after iteration 22: the checkpoint of 20 is committed
            assert first.poll() is None
            time.sleep(0.05)
        second = run_child(tmp_path, tmp_path / "out.pt", "resume")
        assert second.returncode == 1 and "ExperimentLockedError" in second.stderr
        assert f"is being written by another process (pid {first.pid} on host" in second.stderr
        assert not (tmp_path / "out.pt").exists()
        exp = next((tmp_path / "proj").iterdir())
        assert CheckpointManager(exp / "checkpoint_model").list()[-1].iteration == 20  # untouched by the second
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = run_child(tmp_path, tmp_path / "out.pt", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(load_result(tmp_path / "out.pt"), straight("global", 0), 20)


class _NaNAt(Callback):
    """Poisons the model (as a NaN loss's step would) before iteration ``at``, so that its loss is NaN."""

    def __init__(self, at: int) -> None:
        super().__init__("nan-at", execution_order=-1)
        self.at = at

    def on_batch_begin(self) -> None:
        tl = self.train_loop_obj
        if tl.iteration + 1 == self.at:
            with torch.no_grad():
                tl.model.net[0].weight[0, 0] = float("nan")


def test_non_finite_weights_never_become_latest_and_are_not_resumed(tmp_path: Path) -> None:
    from aitoolbox.loop.callbacks import TerminateOnNaN

    tl = _tl(tmp_path, iteration_save_freq=2)
    tl.fit(num_epochs=4, callbacks=[_NaNAt(11), TerminateOnNaN()])  # 4 batches per epoch: in epoch 2
    assert "non-finite loss nan" in tl.stop_reason
    manager = CheckpointManager(tl.checkpoint_dir)
    assert manager.latest_name() == "ckpt-e0002-i000000010"  # the checkpoints of iteration 11 and 12 were refused
    for info in manager.list():
        assert first_non_finite(manager.load(info)["model"]) is None

    nan_ckpt = manager.save({**manager.load().parts, "model": tl.model.state_dict()}, epoch=2, iteration=11)
    manager.wait()  # a NaN checkpoint from elsewhere (another tool, an older version) is `latest` now
    with pytest.raises(CheckpointIncompatibleError, match=r"holds non-finite values \(model\['net.0.weight'\]"):
        _tl(tmp_path).fit(num_epochs=4, resume_from="latest")
    resumed = _tl(tmp_path)
    resumed.fit(num_epochs=3, resume_from=tl.checkpoint_dir / nan_ckpt, allow_non_finite_resume=True)
    assert resumed.epochs_done == 3


@pytest.mark.parametrize("every", [0, 4])
def test_num_iterations_in_two_fits_equals_one_run(tmp_path: Path, every: int) -> None:
    """fit(num_iterations=6) ends inside epoch 1 (4 batches per epoch); the resume to 10 trains the rest of that epoch
    (before, it went on from epoch 2: two batches were never trained)."""
    torch.manual_seed(0)
    first = _tl(tmp_path / "two", iteration_save_freq=every)
    first.fit(num_iterations=6)
    assert len(first.train_history["loss"]) == 2  # the cut epoch is closed, as the original's loop did
    latest = CheckpointManager(first.checkpoint_dir).load()
    assert (latest.info.epoch, latest.info.iteration, latest["loop"]["batch_in_epoch"]) == (1, 6, 2)
    resumed = _tl(tmp_path / "two")
    resumed.fit(num_iterations=10, resume_from="latest")
    torch.manual_seed(0)
    straight = _tl(tmp_path / "one", iteration_save_freq=every)
    straight.fit(num_iterations=10)
    assert resumed.train_history.to_dict() == straight.train_history.to_dict()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_a_failing_fit_finishes_and_reports_the_commit_in_flight(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading
    import time

    from aitoolbox.loop.extensions import LoopExtension

    class SlowFailingUpload(LoopExtension):  # the checkpoint's commit hook fails, slowly (e.g. a stuck mount)
        def on_fit_start(self, loop: Any) -> None:
            def on_commit(info: Any) -> None:
                if info.epoch == 2:
                    time.sleep(0.5)
                    raise OSError("the commit hook failed")

            loop.checkpoint_manager.on_commit = on_commit

    class Bug(Callback):
        def __init__(self) -> None:
            super().__init__("bug", execution_order=20_000)  # after the epoch-end checkpoint started

        def on_epoch_end(self) -> None:
            if self.train_loop_obj.epoch == 1:
                raise RuntimeError("a bug in a callback")

    tl = _tl(tmp_path, extensions=[SlowFailingUpload()])
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="a bug in a callback") as err:
        tl.fit(num_epochs=3, callbacks=[Bug()])
    assert not [t for t in threading.enumerate() if t.name.startswith("checkpoint-")]  # nothing left running
    assert "the checkpoint being committed when training failed could not be committed" in caplog.text
    assert "the commit hook failed" in caplog.text
    if hasattr(err.value, "__notes__"):
        assert "also, the checkpoint being committed failed" in err.value.__notes__[0]


def test_two_callbacks_of_one_class_get_their_own_state_back_in_any_order(tmp_path: Path) -> None:
    from aitoolbox.loop.callbacks import EarlyStopping

    first = _tl(tmp_path)
    on_val, on_loss = EarlyStopping(monitor="val_loss", patience=9), EarlyStopping(monitor="loss", patience=9)
    first.fit(num_epochs=2, callbacks=[on_val, on_loss])
    saved = CheckpointManager(first.checkpoint_dir).load()["callbacks"]
    assert saved["EarlyStopping(val_loss)"] == on_val.state_dict() != on_loss.state_dict()
    resumed = _tl(tmp_path)
    again_val, again_loss = EarlyStopping(monitor="val_loss", patience=9), EarlyStopping(monitor="loss", patience=9)
    resumed.fit(num_epochs=3, callbacks=[again_loss, again_val], resume_from="latest")  # the other order
    torch.manual_seed(0)
    straight = _tl(tmp_path / "straight")
    one_val, one_loss = EarlyStopping(monitor="val_loss", patience=9), EarlyStopping(monitor="loss", patience=9)
    straight.fit(num_epochs=3, callbacks=[one_val, one_loss])
    assert again_val.state_dict() == one_val.state_dict() and again_loss.state_dict() == one_loss.state_dict()

    same = [EarlyStopping(monitor="val_loss", patience=1), EarlyStopping(monitor="val_loss", patience=5)]
    with pytest.raises(LoopConfigError, match=r"under the key 'EarlyStopping\(val_loss\)'.*cb.state_key ="):
        _tl(tmp_path / "ambiguous").fit(num_epochs=1, callbacks=same)
    assert not (tmp_path / "ambiguous" / "p").exists() or not list((tmp_path / "ambiguous" / "p").rglob("ckpt-*"))
    same[1].state_key = "patient"
    _tl(tmp_path / "ambiguous").fit(num_epochs=1, callbacks=same)
