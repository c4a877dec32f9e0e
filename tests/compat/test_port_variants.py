"""Port of the original AIToolbox 1.8 ``test_train_loop_extensions.py`` checks of public behaviour: the tracked
variants take the original's arguments (``source_dirs``, ``lazy_experiment_save``), and the EndSave variants refuse
a result package without its loader, or no package at all, with a ``ValueError`` before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox import ClassificationResultPackage
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave


def parts() -> tuple[Any, Any, Any]:
    model = TinyClassifier()
    return model, make_classification_loader(32, batch_size=16), torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("variant", [TrainLoopCheckpoint, TrainLoopEndSave, TrainLoopCheckpointEndSave])
def test_code_saved_into_the_experiment(tmp_path: Path, variant: Any, lazy: bool) -> None:
    src = tmp_path / "src_a"
    src.mkdir()
    (src / "m.py").write_text("A = 1\n")
    model, loader, opt = parts()
    packages = {} if variant is TrainLoopCheckpoint else {"val_result_package": ClassificationResultPackage()}
    tl = variant(
        model,
        loader,
        loader,
        None,
        opt,
        nn.CrossEntropyLoss(),
        "project_name",
        "experiment_name",
        tmp_path / "runs",
        {},
        cloud_save_mode=None,
        source_dirs=[src],
        lazy_experiment_save=lazy,
        **packages,
    )
    assert not (tmp_path / "runs" / "project_name").exists()  # nothing is written before fit, lazy or not
    tl.fit(num_epochs=1)
    assert (tl.experiment_dir / "code" / "src_a.zip").is_file()
    assert tl.experiment_dir.parent == tmp_path / "runs" / "project_name"


def test_loader_package_exceptions(tmp_path: Path) -> None:
    model, loader, opt = parts()
    pkg = ClassificationResultPackage
    for val_loader, test_loader, packages in (
        (None, loader, {"val_result_package": pkg(), "test_result_package": pkg()}),
        (loader, None, {"val_result_package": pkg(), "test_result_package": pkg()}),
        (loader, None, {"test_result_package": pkg()}),
        (None, None, {"val_result_package": pkg(), "test_result_package": pkg()}),
        (loader, loader, {"val_result_package": None, "test_result_package": None}),
    ):
        with pytest.raises(ValueError):
            TrainLoopEndSave(
                model,
                loader,
                val_loader,
                test_loader,
                opt,
                nn.CrossEntropyLoss(),
                "project_name",
                "experiment_name",
                tmp_path,
                hyperparams={},
                **packages,
            )
