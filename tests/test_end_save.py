"""TrainLoopEndSave and TrainLoopCheckpointEndSave: the evaluated, saved experiment; the callbacks that feed it."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn, optim

from aitoolbox.checkpointing import CheckpointManager
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import EarlyStopping
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.callbacks import CSVHistoryWriter, ModelPerformanceEvaluation, TensorBoardLogger
from aitoolbox.torchtrain.train_loop import TrainLoop, TrainLoopCheckpointEndSave, TrainLoopEndSave


def _args(model: nn.Module | None = None, with_test: bool = True) -> tuple[Any, ...]:
    model = model or TinyClassifier()
    return (
        model,
        make_classification_loader(256, batch_size=32, shuffle=True),
        make_classification_loader(96, batch_size=32, seed=1),
        make_classification_loader(96, batch_size=32, seed=2) if with_test else None,
        optim.Adam(model.parameters(), lr=1e-2),
        nn.CrossEntropyLoss(),
    )


@pytest.mark.parametrize("variant", [TrainLoopEndSave, TrainLoopCheckpointEndSave])
def test_experiment_folder_is_complete_and_consistent(tmp_path: Path, variant: type) -> None:
    package = ClassificationResultPackage()  # the same instance for both sets
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999)}
    args = _args()
    tl = variant(
        *args, "proj", "exp", tmp_path, hyper, val_result_package=package, test_result_package=package, device="cpu"
    )
    model = tl.fit(num_epochs=3)
    exp = tl.experiment_dir
    assert hyper == {"lr": 1e-2, "betas": (0.9, 0.999)}
    expected = {
        "hyperparams.json",
        "environment.json",
        "summary.md",
        "model/model_state_dict.pt",
        "model/model_info.json",
        "results/validation_results.json",
        "results/test_results.json",
        "results/validation_predictions.npz",
        "results/test_predictions.npz",
        "results/training_history.json",
        "results/training_history.csv",
        "plots/loss.png",
        "plots/confusion_matrix_validation.png",
        "plots/confusion_matrix_test.png",
    }
    files = {str(p.relative_to(exp)) for p in exp.rglob("*") if p.is_file()}
    assert expected <= files
    assert not [f for f in files if Path(f).name.startswith(".")]  # no temporaries
    assert any(f.startswith("checkpoint_model/") for f in files) == (variant is TrainLoopCheckpointEndSave)

    # results on disk == tl.results == a fresh evaluation of the saved predictions
    saved = json.loads((exp / "results/test_results.json").read_text())
    assert saved == tl.results["test"]
    with np.load(exp / "results/test_predictions.npz") as npz:
        assert ClassificationResultPackage().evaluate(npz["y_true"], npz["y_pred"]) == saved
        assert npz["y_pred"].shape == (96,) and "metadata_row_sum" in npz
    # the final model loads with weights_only and predicts what the trained one does
    fresh = TinyClassifier()
    fresh.load_state_dict(torch.load(exp / "model/model_state_dict.pt", weights_only=True))
    x, _ = next(iter(args[3]))
    assert torch.equal(fresh(x), model(x))
    info = json.loads((exp / "model/model_info.json").read_text())
    assert info["epochs"] == 3 and info["class"].endswith("TinyClassifier")
    history = json.loads((exp / "results/training_history.json").read_text())
    assert history == tl.train_history.to_dict()
    env = json.loads((exp / "environment.json").read_text())
    assert {"python", "packages", "git_commit", "device"} <= env.keys() and "torch" in env["packages"]
    summary = (exp / "summary.md").read_text()
    assert f"| accuracy | {saved['accuracy']:.4f} |" in summary and "## validation results" in summary


def test_checkpoint_end_save_resumes_and_rewrites_the_results(tmp_path: Path) -> None:
    pkg = ClassificationResultPackage(metrics=["accuracy"])
    first = TrainLoopCheckpointEndSave(*_args(), "p", "e", tmp_path, test_result_package=pkg, device="cpu")
    first.fit(num_epochs=2)
    second = TrainLoopCheckpointEndSave(*_args(), "p", "e", tmp_path, test_result_package=pkg, device="cpu")
    second.fit(num_epochs=4, resume_from="latest")
    assert second.experiment_dir == first.experiment_dir and second.epochs_done == 4
    saved = json.loads((second.experiment_dir / "results/training_history.json").read_text())
    assert len(saved["loss"]) == 4 and saved["loss"][:2] == first.train_history["loss"]


def test_per_epoch_metrics_drive_early_stopping_and_checkpoint_ranking(tmp_path: Path) -> None:
    tl = TrainLoopCheckpointEndSave(
        *_args(),
        "p",
        "e",
        tmp_path,
        val_result_package=ClassificationResultPackage(),
        rm_subopt_local_models="val_accuracy",
        num_best_checkpoints_kept=1,
        device="cpu",
    )
    es = EarlyStopping(monitor="val_accuracy", patience=1)
    tl.fit(num_epochs=30, callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage()), es])
    acc = tl.train_history["val_accuracy"]
    assert len(acc) == tl.epochs_done < 30 and es.mode == "max"  # stopped early on the metric the callback added
    assert {"val_f1_macro", "val_balanced_accuracy"} <= set(tl.train_history)
    assert "val_confusion_matrix" not in tl.train_history  # only scalars go to the history
    kept = {i.epoch for i in CheckpointManager(tl.checkpoint_dir).list()}
    assert kept == {acc.index(max(acc)) + 1, tl.epochs_done}  # the best by val_accuracy (max) and the newest


def test_train_data_evaluation(tmp_path: Path) -> None:
    tl = TrainLoop(*_args(), device="cpu")
    tl.fit(
        num_epochs=2,
        callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]), on_train_data=True)],
    )
    assert len(tl.train_history["train_accuracy"]) == len(tl.train_history["val_accuracy"]) == 2


def test_tensorboard_and_csv_loggers(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tl = TrainLoop(*_args(), device="cpu")
    tl.fit(
        num_epochs=3,
        callbacks=[TensorBoardLogger(tmp_path / "tb", log_every_n_steps=4), CSVHistoryWriter(tmp_path / "h")],
    )
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"epoch/loss", "epoch/val_loss", "train/loss_step"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("epoch/loss")] == pytest.approx(tl.train_history["loss"])
    assert [e.step for e in acc.Scalars("train/loss_step")] == [4, 8, 12, 16, 20, 24]
    rows = list(csv.reader((tmp_path / "h" / "training_history.csv").read_text().splitlines()))
    assert rows[0] == ["epoch", "loss", "val_loss"] and len(rows) == 4


def test_loggers_default_to_the_experiment_folder(tmp_path: Path) -> None:
    tl = TrainLoopEndSave(*_args(), "p", "e", tmp_path, test_result_package=ClassificationResultPackage(), device="cpu")
    tl.fit(num_epochs=1, callbacks=[TensorBoardLogger(), CSVHistoryWriter()])
    assert list((tl.experiment_dir / "tensorboard").iterdir())
    with pytest.raises(LoopConfigError, match="TensorBoardLogger needs log_dir= with a plain TrainLoop"):
        TrainLoop(*_args(), device="cpu").fit(num_epochs=1, callbacks=[TensorBoardLogger()])
    with pytest.raises(LoopConfigError, match="CSVHistoryWriter needs directory="):
        TrainLoop(*_args(), device="cpu").fit(num_epochs=1, callbacks=[CSVHistoryWriter()])


@pytest.mark.parametrize(
    ("kwargs", "with_test", "message"),
    [
        ({}, True, "give val_result_package and/or test_result_package"),
        (
            {"test_result_package": ClassificationResultPackage()},
            False,
            "test_result_package is given but test_loader is None",
        ),
        (
            {"val_result_package": ClassificationResultPackage},
            True,
            r"pass an instance: ClassificationResultPackage\(\)",
        ),
        ({"val_result_package": "accuracy"}, True, "val_result_package must be a result package"),
    ],
)
def test_result_package_errors_at_construction(
    tmp_path: Path, kwargs: dict[str, Any], with_test: bool, message: str
) -> None:
    for variant in (TrainLoopEndSave, TrainLoopCheckpointEndSave):
        with pytest.raises(LoopConfigError, match=message):
            variant(*_args(with_test=with_test), "p", "e", tmp_path, **kwargs)
    assert not (tmp_path / "p").exists()


def test_result_folder_errors_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = {"test_result_package": ClassificationResultPackage()}
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(LoopConfigError, match="is a file; give a folder path"):
        TrainLoopEndSave(*_args(), "p", "e", a_file, **pkg)
    # root bypasses permission bits, so a read-only folder is simulated for this error path
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(LoopConfigError, match="is not writable; choose another folder"):
        TrainLoopEndSave(*_args(), "p", "e", tmp_path / "ro", **pkg)


def test_performance_evaluation_errors() -> None:
    with pytest.raises(LoopConfigError, match="needs a validation_loader"):
        model = TinyClassifier()
        TrainLoop(
            model, make_classification_loader(32), None, None, optim.SGD(model.parameters(), 0.1), nn.CrossEntropyLoss()
        ).fit(num_epochs=1, callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage())])
    with pytest.raises(LoopConfigError, match="must be a result package instance"):
        ModelPerformanceEvaluation("accuracy")  # type: ignore[arg-type]


def test_a_metric_evaluated_every_n_epochs_is_in_its_epochs_rows(tmp_path: Path) -> None:
    """end_auto_eval=2 evaluates epochs 1, 3, 5 (1-based): their rows hold val_loss, the others none (before, the
    three values filled rows 1, 2, 3). A resume carries the epochs of each value through the checkpoint."""
    package = ClassificationResultPackage()
    tl = TrainLoopCheckpointEndSave(
        *_args(), "p", "e", tmp_path, test_result_package=package, device="cpu", end_auto_eval=2
    )
    tl.fit(num_epochs=3)
    resumed = TrainLoopCheckpointEndSave(
        *_args(), "p", "e", tmp_path, test_result_package=package, device="cpu", end_auto_eval=2
    )
    resumed.fit(num_epochs=5, resume_from="latest")
    assert resumed.train_history.epochs()["val_loss"] == [0, 2, 4]
    with open(resumed.experiment_dir / "results" / "training_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4", "5"]
    filled = [row["epoch"] for row in rows if row["val_loss"]]
    assert filled == ["1", "3", "5"]
    assert [float(rows[int(e) - 1]["val_loss"]) for e in filled] == resumed.train_history["val_loss"]
