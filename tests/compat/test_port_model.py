"""Port of the original AIToolbox 1.8 ``test_torchtrain/test_model.py``: the TTModel contract and TTBasicModel's
ready-made ``get_loss`` / ``get_predictions`` (every batch element moved to the device, predictions back on the CPU,
the target left where it is for predictions), with batch elements that record where they were moved."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from aitoolbox.torchtrain.model import TTBasicModel, TTModel


class Data:
    """A batch element that records the device it was moved to."""

    def __init__(self, value: Any, device: str = "cpu") -> None:
        self.value, self.device = value, device

    def to(self, device: Any) -> Data:
        self.device = device
        return self

    def cpu(self) -> Data:
        self.device = "cpu"
        return self


class Basic(TTBasicModel):
    def __call__(self, a: Data, b: Data) -> Data:  # type: ignore[override]
        return Data([a.value + 10, b.value + 20], device="gpu")


class Weighted(TTBasicModel):
    def __call__(self, seq: Data, lengths: Data, weights: Data) -> Data:  # type: ignore[override]
        weights_2 = [
            w + 10 if len(x) == n else w for x, w, n in zip(seq.value, weights.value, lengths.value, strict=True)
        ]
        return Data([sum(x) * w for x, w in zip(seq.value, weights_2, strict=True)], device=seq.device)


def weighted_batch() -> list[Data]:
    return [
        Data([[1, 2, 3, 4], [3, 3], [5, 6, 7, 8, 9]]),
        Data([4, 2, 5]),
        Data([100, 10, 1000]),
        Data([1.0, 0.5, 1.5]),
    ]


def dot(y_pred: Data, y: Data) -> float:
    return sum(p * t for p, t in zip(y_pred.value, y.value, strict=True))


def test_tt_model_contract() -> None:
    for method in ("get_loss", "get_loss_eval", "get_predictions", "forward"):
        assert callable(getattr(TTModel, method))

    class Failing(TTModel):
        pass

    with pytest.raises(TypeError):
        Failing()  # type: ignore[abstract]

    class Mine(TTModel):
        def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> Any:
            return None

        def get_predictions(self, batch_data: Any, device: Any) -> Any:
            return None

    assert isinstance(Mine(), nn.Module)
    assert isinstance(TTBasicModel(), nn.Module) and isinstance(TTBasicModel(), TTModel)


def test_basic_get_loss_and_predictions() -> None:
    d1, d2, d3 = Data(1), Data(2), Data(300)
    loss = Basic().get_loss([d1, d2, d3], lambda y_pred, y: sum([*y_pred.value, y.value]), "gpu")
    assert loss == 333 and (d1.device, d2.device, d3.device) == ("gpu", "gpu", "gpu")
    d1, d2, d3 = Data(1), Data(2), Data(300)
    predictions, targets, metadata = Basic().get_predictions([d1, d2, d3], "gpu")
    assert predictions.value == [11, 22] and predictions.device == "cpu"
    assert targets.value == 300 and targets.device == "cpu" and metadata == {}
    assert (d1.device, d2.device, d3.device) == ("gpu", "gpu", "cpu")


@pytest.mark.parametrize("device", ["accelerator", "cpu"])
def test_basic_with_several_inputs(device: str) -> None:
    batch = weighted_batch()
    assert Weighted().get_loss(batch, dot, device) == 54185.0
    assert [d.device for d in batch] == [device] * 4
    batch = weighted_batch()
    predictions, targets, metadata = Weighted().get_predictions(batch, device)
    assert predictions.value == [1100, 120, 35350] and predictions.device == "cpu"
    assert targets.value == [1.0, 0.5, 1.5] and targets.device == "cpu" and metadata == {}
    assert [d.device for d in batch] == [device] * 3 + ["cpu"]
