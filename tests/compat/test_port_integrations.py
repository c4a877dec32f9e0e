"""Ports of the original AIToolbox 1.8 ``test_callbacks/test_wandb.py`` and
``test_result_package/test_hf_evaluate_packages.py``, and both integrations through a real TrainLoop: a real
Weights & Biases run (offline, in the experiment folder) and a Hugging Face Evaluate-style metric fed with the
model's metadata."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from aitoolbox import TrainLoop, TrainLoopEndSave, TTModel
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.experiment.result_package.hf_evaluate_packages import HFEvaluateResultPackage
from aitoolbox.loop.testing import make_classification_loader
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation
from aitoolbox.torchtrain.callbacks.wandb import AlertConfig, WandBTracking


class WeightedNet(TTModel):
    """A classifier whose predictions carry a per-sample weight as metadata (what ``additional_results`` holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch_data
        return criterion(self(x.to(device)), y.to(device))  # type: ignore[no-any-return]

    def get_predictions(self, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch_data
        return self(x.to(device)).argmax(dim=1).cpu(), y, {"sample_weight": (x[:, 0].abs() + 0.5).tolist()}


def _loop(cls: Any = TrainLoop, **kwargs: Any) -> Any:
    torch.manual_seed(0)
    model = WeightedNet()
    train, val = make_classification_loader(96, batch_size=16), make_classification_loader(48, batch_size=16, seed=1)
    return cls(model, train, val, val, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), **kwargs)


# ------------------------------------------------------------------------------------ HFEvaluateResultPackage


class EchoMetric:
    """The original test's dummy: ``compute`` returns its inputs."""

    def compute(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs


class WeightedAccuracy:
    """What ``evaluate.load("accuracy")`` computes (its ``sample_weight`` input included), without the Hub download."""

    def compute(self, references: Any, predictions: Any, sample_weight: Any = None, normalize: bool = True) -> Any:
        hits = (np.asarray(references) == np.asarray(predictions)).astype(float)
        w = np.ones_like(hits) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        return {"accuracy": float((hits * w).sum() / (w.sum() if normalize else 1.0))}


@pytest.mark.parametrize("use_models_additional_results", [True, False])
def test_hf_evaluate_inputs(use_models_additional_results: bool) -> None:
    pkg = HFEvaluateResultPackage(
        EchoMetric(),
        use_models_additional_results=use_models_additional_results,
        my_additional_input_1=123,
        my_additional_input_2="ABCD",
    )
    pkg.y_true, pkg.y_predicted, pkg.additional_results = 1, 2, {"additional_results": {"aaa": 3}}
    expected = {
        "references_HFEvaluate": 1,
        "predictions_HFEvaluate": 2,
        "my_additional_input_1_HFEvaluate": 123,
        "my_additional_input_2_HFEvaluate": "ABCD",
    }
    if use_models_additional_results:
        expected["aaa_HFEvaluate"] = 3
    assert pkg.prepare_results_dict() == expected


def test_hf_evaluate_refuses_an_object_without_compute() -> None:
    with pytest.raises(TypeError, match="evaluate.load"):
        HFEvaluateResultPackage("accuracy")


def test_hf_evaluate_in_a_loop_gets_the_models_metadata(tmp_path: Path) -> None:
    pkg = HFEvaluateResultPackage(WeightedAccuracy())  # sample_weight comes from get_predictions' metadata
    weighted_pkg = HFEvaluateResultPackage(WeightedAccuracy())
    unweighted = HFEvaluateResultPackage(WeightedAccuracy(), use_models_additional_results=False)
    tl = _loop(
        TrainLoopEndSave,
        project_name="p",
        experiment_name="e",
        local_model_result_folder_path=tmp_path,
        val_result_package=weighted_pkg,
        test_result_package=unweighted,
    )
    tl.fit(num_epochs=3, callbacks=[ModelPerformanceEvaluation(pkg, {"lr": 0.05})])
    y_pred, y_true, meta = tl.predict_on_validation_set()
    hits = (y_pred == y_true).numpy().astype(float)
    weighted = float((hits * np.array(meta["sample_weight"])).sum() / np.sum(meta["sample_weight"]))
    assert weighted != pytest.approx(hits.mean())  # the weights matter: the check below is not vacuous
    assert tl.train_history["val_accuracy_HFEvaluate"][-1] == pytest.approx(weighted)
    assert pkg.hyperparameters == {"lr": 0.05}  # ModelPerformanceEvaluation's args, as the original handed them
    assert tl.results["validation"] == {"accuracy_HFEvaluate": pytest.approx(weighted)}
    assert tl.results["test"] == {"accuracy_HFEvaluate": pytest.approx(hits.mean())}  # same set, unweighted


# ------------------------------------------------------------------------------------------------- WandBTracking


def test_alert_config_defaults_and_all_parameters() -> None:
    import wandb

    alert = AlertConfig("my_metric", 10.3)
    assert list(alert.__annotations__) == ["metric_name", "threshold_value", "objective", "wandb_alert_level"]
    assert (alert.metric_name, alert.threshold_value, alert.objective, alert.wandb_alert_level) == (
        "my_metric",
        10.3,
        "maximize",
        None,
    )
    alert = AlertConfig("my_metric_new", 100.35, "minimize", wandb.AlertLevel.ERROR)
    assert (alert.objective, alert.wandb_alert_level) == ("minimize", wandb.AlertLevel.ERROR)


@pytest.mark.parametrize(
    ("alerts", "error"),
    [
        ("metric", TypeError),
        ({"metric": 2}, TypeError),
        (["metric", "metric_2", "metric_3"], TypeError),
        ([AlertConfig("metric", 10.0), "metric"], TypeError),
        (
            [AlertConfig("metric", 10.0, objective="minimize"), AlertConfig("metric", 10.0, objective="blaaa")],
            ValueError,
        ),
    ],
)
def test_alert_checking(alerts: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        WandBTracking(alerts=alerts)


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_wandb_tracking_logs_a_real_offline_run_into_the_experiment_folder(wandb_home: Path) -> None:
    import wandb

    tracking = WandBTracking(
        metric_names=["loss", "val_loss", "val_Accuracy"],
        batch_log_frequency=2,
        alerts=[AlertConfig("val_Accuracy", 2.0), AlertConfig("loss", 100.0, "minimize")],
        tags=["compat"],
        mode="offline",
    )
    tl = _loop(
        TrainLoopEndSave,
        project_name="p",
        experiment_name="e",
        local_model_result_folder_path=wandb_home,
        hyperparams={"lr": 0.05, "batch_size": 16},
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
    )
    try:
        tl.fit(num_epochs=3, callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage(), {}), tracking])
        run = tracking.run
        assert run is wandb.run and run.offline
        assert dict(run.config) == {"lr": 0.05, "batch_size": 16}  # the tracked loop's hyperparams
        assert list(run.tags) == ["compat"] and run.name == "e" and run.project == "p"
        summary = run.summary
        assert summary["epoch"] == 2
        assert summary["loss_at_epoch_end/loss"] == pytest.approx(tl.train_history["loss"][-1])
        assert summary["loss_at_epoch_end/val_loss"] == pytest.approx(tl.train_history["val_loss"][-1])
        assert summary["metrics/val_Accuracy"] == pytest.approx(tl.train_history["val_accuracy"][-1])
        assert summary.get("train_loss/last_batch_loss") is not None
        assert Path(run.dir).resolve().is_relative_to(tl.experiment_dir.resolve())  # is_project=True
    finally:
        wandb.finish()
    (offline,) = (tl.experiment_dir / "wandb").glob("offline-run-*")
    (record,) = offline.glob("run-*.wandb")  # the run's records, protobuf (strings stored as they are)
    deadline = time.monotonic() + 30  # wandb's service closes the file shortly after finish() returns
    while b"is too low" not in (data := record.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert data.count(b"val_Accuracy is too low") == 3  # one alert per epoch: accuracy is always below 2.0
    assert b"loss is too high" not in data  # the loss never exceeds 100


def test_wandb_tracking_with_a_plain_loop_needs_the_experiment_names() -> None:
    from aitoolbox.loop import LoopConfigError

    tl = _loop()
    with pytest.raises(LoopConfigError, match="WandBTracking needs \\['project_name'"):
        tl.fit(num_epochs=1, callbacks=[WandBTracking(mode="offline")])
    with pytest.raises(LoopConfigError, match="wandb.init\\(\\) called before fit"):
        tl.fit(num_epochs=1, callbacks=[WandBTracking(wandb_pre_initialized=True)])


def test_wandb_tracking_refuses_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from aitoolbox.loop import LoopConfigError

    with pytest.raises(LoopConfigError, match="batch_log_frequency"):
        WandBTracking(batch_log_frequency=0)
    tl = _loop()
    monkeypatch.setitem(sys.modules, "wandb", None)  # as without the package: `import wandb` raises ImportError
    tracking = WandBTracking(project_name="p", experiment_name="e", local_model_result_folder_path="unused")
    with pytest.raises(LoopConfigError, match=r"pip install 'aitoolbox\[wandb\]'"):
        tl.fit(num_epochs=1, callbacks=[tracking])
    assert tl.iteration == 0  # refused at registration: not a batch trained
