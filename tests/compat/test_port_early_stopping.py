"""Port of the original AIToolbox 1.8 ``tests/test_torchtrain/test_callbacks/test_basic.py`` (EarlyStopping): the
same vectors, run through a real TrainLoop instead of the original's private callbacks handler.

Each vector is ``(monitor, min_delta, patience, values, expected)``: ``values[e]`` is put into the history at epoch
``e`` and ``expected[e]`` is ``early_stop`` after EarlyStopping saw it. Here training really stops at the first
``True``, so the run checks the expected flags up to that epoch and that no further epoch ran."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.callbacks.basic import EarlyStopping, FunctionOnTrainLoop
from aitoolbox.torchtrain.train_loop import TrainLoop

F, T = False, True
TWO_VALUES = [  # test_basic_no_{loss,acc}_change, _drops, _grows, test_delta_{loss,acc}
    ("dummy_loss", 0.0, [10.0, 10.0], [F, T]),
    ("dummy_loss", 0.0, [22232.334, 22232.334], [F, T]),
    ("dummy_acc", 0.0, [10.0, 10.0], [F, T]),
    ("dummy_acc", 0.0, [22232.334, 22232.334], [F, T]),
    ("dummy_loss", 0.0, [10.0, 9.9], [F, F]),
    ("dummy_loss", 0.0, [10223.0, 33.9], [F, F]),
    ("dummy_acc", 0.0, [10.0, 9.9], [F, T]),
    ("dummy_acc", 0.0, [10223.0, 33.9], [F, T]),
    ("dummy_loss", 0.0, [10.0, 11.22], [F, T]),
    ("dummy_loss", 0.0, [1.0, 11323.22], [F, T]),
    ("dummy_acc", 0.0, [10.0, 11.22], [F, F]),
    ("dummy_acc", 0.0, [1.0, 11323.22], [F, F]),
    ("dummy_loss", 2.0, [10.0, 8.1], [F, T]),
    ("dummy_loss", 2.0, [10.0, 8.0], [F, T]),
    ("dummy_loss", 2.0, [10.0, 7.9], [F, F]),
    ("dummy_loss", 2.0, [10.0, 11.9], [F, T]),
    ("dummy_acc", 2.0, [10.0, 12.1], [F, F]),
    ("dummy_acc", 2.0, [10.0, 12.0], [F, T]),
    ("dummy_acc", 2.0, [10.0, 11.9], [F, T]),
    ("dummy_acc", 2.0, [10.0, 9.5], [F, T]),
]
PATIENCE = [  # test_patience_loss, test_patience_acc
    ("dummy_loss", 0.0, 0, [10.0, 10.0, 10.0], [F, T, T]),
    ("dummy_loss", 0.0, 1, [10.0, 10.0, 10.0], [F, F, T]),
    ("dummy_loss", 0.0, 2, [10.0, 10.0, 10.0, 10.0], [F, F, F, T]),
    ("dummy_loss", 1.0, 1, [10.0, 9.0, 8.0], [F, F, F]),
    ("dummy_loss", 1.0, 1, [10.0, 9.4, 8.9], [F, F, F]),
    ("dummy_loss", 1.0, 1, [10.0, 9.4, 9.0], [F, F, T]),
    ("dummy_loss", 1.0, 2, [10.0, 9.4, 9.0], [F, F, F]),
    ("dummy_loss", 1.0, 2, [10.0, 9.4, 9.0, 9.0], [F, F, F, T]),
    ("dummy_loss", 1.0, 2, [10.0, 9.4, 9.0, 8.9], [F, F, F, F]),
    ("dummy_acc", 0.0, 0, [10.0, 10.0, 10.0], [F, T, T]),
    ("dummy_acc", 0.0, 1, [10.0, 10.0, 10.0], [F, F, T]),
    ("dummy_acc", 0.0, 2, [10.0, 10.0, 10.0, 10.0], [F, F, F, T]),
    ("dummy_acc", 1.0, 1, [8.0, 9.0, 10.0], [F, F, F]),
    ("dummy_acc", 1.0, 1, [8.9, 9.4, 10.0], [F, F, F]),
    ("dummy_acc", 1.0, 1, [9.0, 9.4, 10.0], [F, F, T]),
    ("dummy_acc", 1.0, 2, [9.0, 9.4, 10.0], [F, F, F]),
    ("dummy_acc", 1.0, 2, [9.0, 9.0, 9.4, 10.0], [F, F, F, T]),
    ("dummy_acc", 1.0, 2, [9.0, 9.0, 10.0, 10.0], [F, F, F, T]),
    ("dummy_acc", 1.0, 2, [9.0, 9.0, 10.0, 10.1], [F, F, F, F]),
]
VECTORS = [(m, d, 0, v, e) for m, d, v, e in TWO_VALUES] + PATIENCE


@pytest.fixture(scope="module")
def loaders() -> tuple[Any, Any]:
    return make_classification_loader(16, batch_size=16), make_classification_loader(16, batch_size=16, seed=1)


@pytest.mark.parametrize(("monitor", "min_delta", "patience", "values", "expected"), VECTORS)
def test_early_stopping_vectors(
    loaders: tuple[Any, Any], monitor: str, min_delta: float, patience: int, values: list[float], expected: list[bool]
) -> None:
    def put(tl: Any) -> None:
        tl.insert_metric_result_into_history(monitor, values[tl.epoch])

    seen: list[bool] = []
    feed = FunctionOnTrainLoop(put, epoch_end=True, execution_order=-1)  # before EarlyStopping
    observe = FunctionOnTrainLoop(lambda tl: seen.append(bool(tl.early_stop)), epoch_end=True, execution_order=1)
    model = TinyClassifier()
    tl = TrainLoop(model, *loaders, None, torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss())
    tl.fit(num_epochs=len(values), callbacks=[feed, EarlyStopping(monitor, min_delta, patience), observe])
    stop = expected.index(True) + 1 if True in expected else len(expected)
    assert seen == expected[:stop]
    assert tl.epochs_done == stop  # the stop is real: no epoch after it
