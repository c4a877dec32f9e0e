"""Ports of the original AIToolbox 1.8 ``test_training_history.py`` and ``test_model_predict.py``. The original's
history started with empty ``loss``/``accumulated_loss``/``val_loss`` lists; here a metric exists once it has a
value (a difference listed in docs/migration.md), so those expectations leave the empty lists out."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.experiment.result_package.abstract_result_packages import AbstractResultPackage
from aitoolbox.loop import TrainingHistory
from aitoolbox.torchtrain.model import ModelWrap
from aitoolbox.torchtrain.model_predict import PyTorchModelPredictor

HISTORY = {
    "val_loss": [2.25, 2.14, 2.01],
    "val_acc": [0.26, 0.36, 0.5],
    "loss": [2.3, 2.2, 2.1],
    "acc": [0.08, 0.33, 0.31],
}


def dummy() -> TrainingHistory:
    th = TrainingHistory()
    for name, value in (
        ("loss", 123.4),
        ("loss", 1223.4),
        ("loss", 13323.4),
        ("NEW_METRIC", 13323.4),
        ("NEW_METRIC", 133323.4),
        ("loss", 13323.4),
    ):
        th.insert_single_result_into_history(name, value)
    return th


def test_wrap_and_insert() -> None:
    th = TrainingHistory().wrap_pre_prepared_history(HISTORY)
    assert th.get_train_history() == HISTORY
    th = TrainingHistory()
    th.insert_single_result_into_history("loss", 123.4)
    th.insert_single_result_into_history("loss", 0.443)
    th.insert_single_result_into_history("NEW_METRIC", 0.443)
    assert th.get_train_history() == th.get_train_history_dict() == {"loss": [123.4, 0.443], "NEW_METRIC": [0.443]}


def test_mapping_behaviour() -> None:
    th = dummy()
    assert str(th) == str(th.get_train_history()) and len(th) == 2
    assert th["NEW_METRIC"] == [13323.4, 133323.4] and th["loss"] == [123.4, 1223.4, 13323.4, 13323.4]
    with pytest.raises(KeyError):
        th["missing_metric"]
    th["loss"] = 99999
    th["CompletelyNewMetric"] = 55544
    assert th.get_train_history() == {
        "loss": [123.4, 1223.4, 13323.4, 13323.4, 99999],
        "NEW_METRIC": [13323.4, 133323.4],
        "CompletelyNewMetric": [55544],
    }
    assert all(k in th for k in th.keys()) and "missing_metric" not in th
    assert list(th) == list(th.keys()) == ["loss", "NEW_METRIC", "CompletelyNewMetric"]
    assert list(th.items()) == list(th.get_train_history().items())


def test_add() -> None:
    th = dummy()
    added = th + {"ADDITIONAL_metric": 122.3, "addi": 344}
    assert added.get_train_history() == {**dummy().get_train_history(), "ADDITIONAL_metric": [122.3], "addi": [344]}
    added_2 = {"ADDITIONAL_metric": 13322.3, "addi": 1001010} + th
    both = added_2 + {"ADDITIONAL_metric": 11.3, "addi": 1}
    assert both["ADDITIONAL_metric"] == [13322.3, 11.3] and both["addi"] == [1001010, 1]
    assert "addi" not in th  # + copies
    th += {"ADDITIONAL_metric": 122.3, "addi": 344}
    assert th.get_train_history() == added.get_train_history()


class Net(nn.Module):
    """Batch ``b`` holds ``b``: predictions ``b + 100``, targets ``b``, metadata ``b + 200``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + self.w


class Feed:
    def get_loss(self, model: nn.Module, batch: Any, criterion: Any, device: Any) -> torch.Tensor:
        return criterion(model(batch[0]), batch[0] * 0 + 1)

    def get_predictions(self, model: nn.Module, batch: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch
        return x.long().squeeze(1) + 100, y, {"bla": (x.long().squeeze(1) + 200).tolist()}


class Seen(AbstractResultPackage):
    def __init__(self) -> None:
        super().__init__(pkg_name="seen")

    def prepare_results_dict(self) -> dict[str, Any]:
        return {"dummy": 111, "n": len(self.y_true)}


def loader() -> DataLoader[Any]:
    data = [(torch.tensor([float(b)]), b) for b in (1, 2) for _ in range(64)]
    return DataLoader(data, batch_size=64)  # type: ignore[arg-type]


def test_model_predictor() -> None:
    predictor = PyTorchModelPredictor(ModelWrap(Net(), Feed()), loader())
    y_pred, y_test, metadata = predictor.model_predict()
    assert y_test.tolist() == [1] * 64 + [2] * 64 and y_pred.tolist() == [101] * 64 + [102] * 64
    assert metadata == {"bla": [201] * 64 + [202] * 64}
    assert predictor.model_get_loss(nn.MSELoss()) == pytest.approx(1.0)  # w = 0, target 1
    pkg = Seen()
    returned = predictor.evaluate_result_package(result_package=pkg, return_result_package=True)
    assert returned is pkg and pkg.get_results() == {"dummy": 111, "n": 128}
    assert pkg.y_true.tolist() == y_test.tolist() and pkg.additional_results["additional_results"] == metadata
    assert predictor.evaluate_result_package(Seen(), return_result_package=False) == {"dummy": 111, "n": 128}
