"""The original AIToolbox result-package contract: a user's package written for it works here, in evaluation
callbacks and at the end of training, and the built-in packages answer it too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from aitoolbox import ClassificationResultPackage, TrainLoop, TrainLoopEndSave
from aitoolbox.experiment.result_package.abstract_result_packages import (
    AbstractResultPackage,
    MultipleResultPackageWrapper,
    PreCalculatedResultPackage,
)
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation


class HitRate(AbstractResultPackage):
    """Written the original's way: prepare_results_dict() over self.y_true / self.y_predicted."""

    def __init__(self, strict_content_check: bool = False, **kwargs: Any) -> None:
        AbstractResultPackage.__init__(self, "Hit rate", strict_content_check, **kwargs)

    def prepare_results_dict(self) -> dict[str, Any]:
        return {
            "HitRate": float(np.mean(self.y_true == self.y_predicted)),
            "Misses": int(np.sum(self.y_true != self.y_predicted)),
        }


def test_a_user_package_written_for_the_original() -> None:
    pkg = HitRate(strict_content_check=True, source="unit test")
    assert pkg.pkg_name == "Hit rate" and pkg.strict_content_check and pkg.package_metadata == {"source": "unit test"}
    with pytest.raises(ValueError, match="Results dict missing"):
        pkg.get_results()  # strict: missing results are an error
    pkg.prepare_result_package([1, 2, 3, 4], [1, 2, 0, 4], hyperparameters={"lr": 0.1}, extra="x")
    assert isinstance(pkg.y_true, np.ndarray) and pkg.additional_results == {"extra": "x"}
    assert pkg.get_results() == {"HitRate": 0.75, "Misses": 1} and pkg.get_hyperparameters() == {"lr": 0.1}
    assert pkg["HitRate"] == 0.75 and "Misses" in pkg and len(pkg) == 2
    assert str(pkg) == "HitRate: 0.75\nMisses: 1"
    assert pkg.evaluate([0, 1], [0, 0]) == {"HitRate": 0.5, "Misses": 1}  # the evaluation API works on it too
    assert not pkg.metrics_known


def test_builtin_packages_answer_the_original_contract() -> None:
    pkg = ClassificationResultPackage(strict_content_check=True)
    pkg.prepare_result_package([0, 1, 1, 2], [0, 1, 2, 2], hyperparameters={})
    assert pkg.get_results() is not None and pkg.get_results()["accuracy"] == 0.75  # type: ignore[index]
    assert pkg["accuracy"] == 0.75 and isinstance(pkg.y_predicted, np.ndarray)


def test_adding_evaluated_packages_and_dicts() -> None:
    a, b = HitRate(), ClassificationResultPackage(metrics=["accuracy"])
    a.prepare_result_package([1, 1], [1, 0])
    b.prepare_result_package([1, 1], [1, 1])
    merged = a + b
    assert isinstance(merged, MultipleResultPackageWrapper)
    assert merged.get_results() == {
        "Hit rate": {"HitRate": 0.5, "Misses": 1},
        "ClassificationResultPackage": {"accuracy": 1.0},
    }
    with_dict = a + {"BLEU": 31.0}
    assert with_dict.get_results() == {"Hit rate": {"HitRate": 0.5, "Misses": 1}, "PreCalculatedResult": {"BLEU": 31.0}}
    assert ({"BLEU": 31.0} + a).get_results() == with_dict.get_results()  # type: ignore[operator]
    a += {"BLEU": 31.0}
    assert a.get_results() == {"HitRate": 0.5, "Misses": 1, "BLEU": 31.0}
    with pytest.raises(ValueError, match="both hold the results"):
        a += {"BLEU": 1.0}
    with pytest.raises(ValueError, match="no results yet"):
        _ = HitRate() + {"x": 1}  # the original's merge needs evaluated packages
    assert PreCalculatedResultPackage({"x": 2}).get_results() == {"x": 2}
    # before evaluation, + of this project's packages still makes one package computing both
    both = ClassificationResultPackage(metrics=["accuracy"]) + ClassificationResultPackage(metrics=["f1_macro"])
    assert both.evaluate([0, 1], [0, 1]) == {"accuracy": 1.0, "f1_macro": 1.0}


def test_a_package_without_metrics_is_refused() -> None:
    class Nothing(AbstractResultPackage):
        pass

    with pytest.raises(Exception, match="implement compute"):
        Nothing()


def _loop(tmp_path: Path, **kwargs: Any) -> Any:
    torch.manual_seed(0)
    model = TinyClassifier()
    train, val = make_classification_loader(96, batch_size=16), make_classification_loader(48, batch_size=16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    return model, train, val, opt


def test_original_style_package_in_evaluation_and_end_save(tmp_path: Path) -> None:
    model, train, val, opt = _loop(tmp_path)
    tl = TrainLoopEndSave(
        model,
        train,
        val,
        val,
        opt,
        nn.CrossEntropyLoss(),
        project_name="p",
        experiment_name="e",
        local_model_result_folder_path=tmp_path,
        val_result_package=HitRate(),
        test_result_package=HitRate(),
    )
    tl.fit(num_epochs=3, callbacks=[ModelPerformanceEvaluation(HitRate(), {}, on_train_data=True)])
    history = tl.train_history
    assert len(history["val_HitRate"]) == 3 and len(history["train_Misses"]) == 3
    assert history["train_end_val_HitRate"] == [history["val_HitRate"][-1]]  # the weights did not change since
    saved = json.loads((tl.experiment_dir / "results" / "test_results.json").read_text())
    predicted, truth, _ = tl.predict_on_test_set()
    assert saved["HitRate"] == pytest.approx(float((predicted == truth).float().mean()))


def test_plain_loop_monitoring_an_original_style_metric(tmp_path: Path) -> None:
    from aitoolbox.torchtrain.callbacks.basic import EarlyStopping

    model, train, val, opt = _loop(tmp_path)
    es = EarlyStopping(monitor="val_Misses", patience=0)  # named by the package only once it computed
    TrainLoop(model, train, val, None, opt, nn.CrossEntropyLoss()).fit(
        num_epochs=4, callbacks=[ModelPerformanceEvaluation(HitRate(), {}), es]
    )
    assert es.best is not None


def test_torch_metrics_package_in_evaluation() -> None:
    import torchmetrics

    from aitoolbox.experiment.result_package.torch_metrics_packages import TorchMetricsPackage

    metric = torchmetrics.Accuracy(task="multiclass", num_classes=3)
    pkg = TorchMetricsPackage(metric)
    pkg.prepare_result_package(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    assert pkg.get_results() == {"MulticlassAccuracy_PTLMetrics": pytest.approx(0.75)}
    model, train, val, opt = _loop(Path())
    tl = TrainLoop(model, train, val, None, opt, nn.CrossEntropyLoss())
    collection = torchmetrics.MetricCollection({"acc": torchmetrics.Accuracy(task="multiclass", num_classes=3)})
    tl.fit(num_epochs=2, callbacks=[ModelPerformanceEvaluation(TorchMetricsPackage(collection), {})])
    predicted, truth, _ = tl.predict_on_validation_set()
    assert tl.train_history["val_acc_PTLMetrics"][-1] == pytest.approx(float((predicted == truth).float().mean()))
