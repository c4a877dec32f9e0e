"""Port of the original AIToolbox 1.8 ``test_callbacks/test_abstract.py``: the callback hooks, registration, and
``AbstractExperimentCallback`` taking the experiment (and cloud) details from a tracked TrainLoop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from aitoolbox import ClassificationResultPackage, TrainLoop, TrainLoopCheckpointEndSave
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.callbacks.abstract import AbstractCallback, AbstractExperimentCallback

HOOKS = [
    "on_train_loop_registration",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_begin",
    "on_train_end",
    "on_batch_begin",
    "on_batch_end",
    "on_after_gradient_update",
    "on_after_optimizer_step",
]


class Registered(AbstractCallback):
    def __init__(self) -> None:
        super().__init__("tracker")
        self.calls: list[str] = []

    def on_train_loop_registration(self) -> None:
        self.calls.append("on_train_loop_registration")


def plain_loop() -> TrainLoop:
    model = TinyClassifier()
    loader = make_classification_loader(32, batch_size=16)
    return TrainLoop(model, loader, loader, None, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())


def tracked(tmp_path: Path, **cloud: str) -> TrainLoopCheckpointEndSave:
    model = TinyClassifier()
    loader = make_classification_loader(32, batch_size=16)
    return TrainLoopCheckpointEndSave(
        model,
        loader,
        loader,
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        project_name="test_project",
        experiment_name="test_experiment",
        local_model_result_folder_path=tmp_path,
        hyperparams={},
        val_result_package=ClassificationResultPackage(),
        **cloud,  # type: ignore[arg-type]
    )


def test_abstract_callback_hooks_and_registration() -> None:
    callback = AbstractCallback("test_callback")
    assert all(callable(getattr(callback, hook)) for hook in HOOKS)
    registered = Registered()
    assert registered.register_train_loop_object(plain_loop()) is registered
    assert isinstance(registered, AbstractCallback) and registered.calls == ["on_train_loop_registration"]


def test_experiment_callback_details() -> None:
    callback = AbstractExperimentCallback("test_callback")
    assert callable(callback.try_infer_experiment_details)
    assert callback.project_name is None and callback.experiment_name is None
    assert callback.local_model_result_folder_path is None
    callback.register_train_loop_object(plain_loop())
    for infer_cloud in (False, True):  # a plain TrainLoop has no experiment (the original: AttributeError)
        with pytest.raises(LoopConfigError, match="needs \\['project_name', 'experiment_name'"):
            callback.try_infer_experiment_details(infer_cloud_details=infer_cloud)


def test_experiment_callback_infers_from_a_tracked_loop(tmp_path: Path) -> None:
    callback = AbstractExperimentCallback("test_callback")
    callback.register_train_loop_object(tracked(tmp_path))
    callback.try_infer_experiment_details(infer_cloud_details=False)
    assert (callback.project_name, callback.experiment_name) == ("test_project", "test_experiment")
    assert Path(callback.local_model_result_folder_path or "") == tmp_path
    assert callback.cloud_save_mode is None  # not asked for


def test_experiment_callback_infers_cloud_details(tmp_path: Path) -> None:
    loop = tracked(tmp_path, cloud_save_mode="local", bucket_name="my-fancy-bucket", cloud_dir_prefix="MyFolder_prefix")
    callback = AbstractExperimentCallback("test_callback")
    callback.register_train_loop_object(loop)
    callback.try_infer_experiment_details(infer_cloud_details=True)
    assert (callback.cloud_save_mode, callback.bucket_name, callback.cloud_dir_prefix) == (
        "local",
        "my-fancy-bucket",
        "MyFolder_prefix",
    )
    given = AbstractExperimentCallback("given", cloud_save_mode="s3", bucket_name="other")
    given.register_train_loop_object(loop)
    given.try_infer_experiment_details(infer_cloud_details=True)
    assert (given.cloud_save_mode, given.bucket_name) == ("s3", "other")  # what the callback was given wins
