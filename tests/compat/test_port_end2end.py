"""Port of the original AIToolbox 1.8 ``test_e2e_train_loop/test_end2end_train_loop.py``: a small feed-forward net
trained 5 epochs on seeded random data gives the original's recorded numbers (losses to 6 places, predicted classes
exactly). The original's history ``loss`` was a second eval-mode pass over the training set and ``accumulated_loss``
the mean of the batch losses; here ``loss`` is the latter and the former is ``evaluate_loss_on_train_set()``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.torchtrain.model import TTModel
from aitoolbox.torchtrain.train_loop import TrainLoop

# the original's recorded results
EVAL_LOSS = [2.224587655067444, 2.1440203189849854, 2.0584306001663206, 1.962017869949341, 1.8507084131240845]
ACCUMULATED_LOSS = [2.3059947967529295, 2.1976317405700683, 2.114974856376648, 2.0259472250938417, 1.9252637863159179]
VAL_LOSS = [2.330514828364054, 2.345397472381592, 2.363233725229899, 2.3853348096211753, 2.4111196994781494]
TEST_LOSS = 2.31626296043396
TRAIN_PRED = [
    0,
    4,
    8,
    0,
    1,
    1,
    6,
    1,
    6,
    1,
    8,
    3,
    0,
    0,
    8,
    8,
    1,
    8,
    8,
    1,
    8,
    0,
    8,
    0,
    0,
    1,
    3,
    4,
    8,
    8,
    0,
    8,
    8,
    1,
    8,
    8,
    5,
    5,
    1,
    8,
    8,
    8,
    8,
    8,
    9,
    0,
    8,
    8,
    5,
    8,
    8,
    1,
    1,
    8,
    5,
    1,
    8,
    8,
    5,
    5,
    1,
    8,
    8,
    8,
    8,
    0,
    0,
    1,
    1,
    0,
    8,
    8,
    3,
    0,
    5,
    0,
    8,
    9,
    1,
    8,
    8,
    8,
    5,
    8,
    5,
    8,
    0,
    1,
    8,
    5,
    8,
    6,
    5,
    1,
    8,
    1,
    0,
    8,
    1,
    8,
]
VAL_PRED = [1, 1, 1, 1, 5, 8, 0, 8, 1, 1, 5, 8, 8, 1, 8, 8, 1, 8, 8, 8, 1, 0, 0, 8, 0, 1, 1, 0, 1, 8]
TEST_PRED = [4, 8, 0, 8, 1, 8, 1, 1, 8, 8, 8, 8, 8, 0, 8, 8, 5, 8, 8, 5, 8, 1, 0, 5, 1, 8, 8, 8, 8, 1]


class FFNet(TTModel):
    def __init__(self) -> None:
        super().__init__()
        self.ff_1, self.ff_2, self.ff_3 = nn.Linear(50, 100), nn.Linear(100, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.ff_3(F.relu(self.ff_2(F.relu(self.ff_1(x))))), dim=1)

    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch_data
        return criterion(self(x.to(device)), y.to(device))  # type: ignore[no-any-return]

    def get_predictions(self, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        x, y = batch_data
        return self(x.to(device)).cpu(), y, {"example_feat_sum": x.sum(dim=1).tolist()}


class CriterionInModel(FFNet):
    def get_loss(self, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch_data
        return F.nll_loss(self(x), y)


def seeded() -> None:
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)


def small(model_class: type[FFNet] = FFNet, criterion: Any = None) -> tuple[TrainLoop, list[TensorDataset]]:
    seeded()
    data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (100, 30, 30)]
    model = model_class()
    tl = TrainLoop(
        model,
        *[DataLoader(d, batch_size=10) for d in data],
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        criterion,
    )
    tl.fit(num_epochs=5)
    return tl, data


@pytest.mark.parametrize(("model_class", "criterion"), [(FFNet, nn.NLLLoss()), (CriterionInModel, None)])
def test_e2e_history_and_losses(model_class: type[FFNet], criterion: Any) -> None:
    tl, _ = small(model_class, criterion)
    assert tl.epoch == 4
    assert sorted(tl.train_history) == ["loss", "val_loss"]
    assert tl.train_history["loss"] == pytest.approx(ACCUMULATED_LOSS, abs=1e-6)
    assert tl.train_history["val_loss"] == pytest.approx(VAL_LOSS, abs=1e-6)
    assert tl.evaluate_loss_on_train_set(float_dict_format=True) == pytest.approx(EVAL_LOSS[-1], abs=1e-6)
    assert tl.evaluate_loss_on_validation_set(float_dict_format=True) == pytest.approx(VAL_LOSS[-1], abs=1e-6)
    assert tl.evaluate_loss_on_test_set(float_dict_format=True) == pytest.approx(TEST_LOSS, abs=1e-6)


def test_e2e_predictions() -> None:
    tl, data = small(criterion=nn.NLLLoss())
    for predict, dataset, expected in zip(
        (tl.predict_on_train_set, tl.predict_on_validation_set, tl.predict_on_test_set),
        data,
        (TRAIN_PRED, VAL_PRED, TEST_PRED),
        strict=True,
    ):
        pred, target, meta = predict()
        assert pred.argmax(dim=1).tolist() == expected
        assert target.tolist() == dataset.tensors[1].tolist()
        assert meta["example_feat_sum"] == dataset.tensors[0].sum(dim=1).tolist()


@pytest.mark.parametrize("mode", ["iterations", "grad_accumulation"])
def test_e2e_epochs_equal_iterations_and_accumulation(mode: str) -> None:
    seeded()
    model = FFNet()
    opt = optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))
    seeded()
    model_2 = FFNet()
    opt_2 = optim.Adam(model_2.parameters(), lr=0.001, betas=(0.9, 0.999))
    data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (1000, 300, 300)]
    tl = TrainLoop(model, *[DataLoader(d, batch_size=100) for d in data], opt, nn.NLLLoss())
    tl.fit(num_epochs=10)
    size_2 = 100 if mode == "iterations" else 20
    tl_2 = TrainLoop(model_2, *[DataLoader(d, batch_size=size_2) for d in data], opt_2, nn.NLLLoss())
    if mode == "iterations":
        tl_2.fit(num_iterations=10 * len(tl_2.train_loader))
    else:
        tl_2.fit(num_epochs=10, grad_accumulation=5)
    for split in ("train", "validation", "test"):
        pred = getattr(tl, f"predict_on_{split}_set")()[0].argmax(dim=1).tolist()
        assert pred == getattr(tl_2, f"predict_on_{split}_set")()[0].argmax(dim=1).tolist()
        loss = getattr(tl, f"evaluate_loss_on_{split}_set")()
        assert loss == pytest.approx(getattr(tl_2, f"evaluate_loss_on_{split}_set")(), abs=1e-6)


def test_e2e_tracked_variant_gives_the_same_numbers_and_files(tmp_path: Any) -> None:
    """Port of ``test_end2end_train_loop_tracking.py``: TrainLoopCheckpointEndSave trains as the plain loop, and
    writes its checkpoints (one per epoch), final model and the result packages' results."""
    import json

    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    def tracked(val_size: int) -> tuple[TrainLoopCheckpointEndSave, list[TensorDataset]]:
        seeded()
        data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (100, val_size, 30)]
        model = FFNet()
        tl = TrainLoopCheckpointEndSave(
            model,
            *[DataLoader(d, batch_size=10) for d in data],
            optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
            nn.NLLLoss(),
            project_name="e2e_train_loop_example",
            experiment_name="TrainLoopCheckpointEndSave_example",
            local_model_result_folder_path=tmp_path,
            hyperparams={"batch_size": 10},
            val_result_package=ClassificationResultPackage(),
            test_result_package=ClassificationResultPackage(),
            cloud_save_mode=None,
        )
        tl.fit(num_epochs=5)
        return tl, data

    tl, _ = tracked(30)
    assert tl.train_history["loss"] == pytest.approx(ACCUMULATED_LOSS, abs=1e-6)
    assert tl.train_history["val_loss"] == pytest.approx(VAL_LOSS, abs=1e-6)
    assert tl.evaluate_loss_on_train_set() == pytest.approx(EVAL_LOSS[-1], abs=1e-6)
    assert tl.evaluate_loss_on_test_set() == pytest.approx(TEST_LOSS, abs=1e-6)
    assert tl.predict_on_train_set()[0].argmax(dim=1).tolist() == TRAIN_PRED

    tl, _ = tracked(40)  # the saved-files check of the original uses 40 validation samples
    folder = tl.experiment_dir
    assert sorted(p.name[:10] for p in (folder / "checkpoint_model").glob("ckpt-*")) == [
        f"ckpt-e{e:04d}" for e in range(1, 6)
    ]  # one checkpoint per epoch, as the original's model_..._E<epoch>.pth
    assert (folder / "model" / "model_state_dict.pt").is_file()
    assert json.loads((folder / "hyperparams.json").read_text()) == {"batch_size": 10}
    # the original recorded Accuracy 0.1 on the test set and 0.125 on the validation set
    assert json.loads((folder / "results" / "test_results.json").read_text())["accuracy"] == pytest.approx(0.1)
    assert json.loads((folder / "results" / "validation_results.json").read_text())["accuracy"] == pytest.approx(0.125)


@pytest.mark.parametrize("more", [1, 5])
def test_e2e_continue_training_from_the_checkpoint_equals_in_memory(tmp_path: Any, more: int) -> None:
    """Port of ``test_end2end_train_loop_checkpoint_cont_training_pred.py``: training on from the saved checkpoint
    (the original reloaded its ``.pth`` with ``PyTorchLocalModelLoader``; here ``fit(resume_from="latest")``) gives
    the same predictions and losses as training on in memory."""
    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    seeded()
    data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (100, 30, 30)]
    loaders = [DataLoader(d, batch_size=10) for d in data]

    def tracked(model: FFNet) -> TrainLoopCheckpointEndSave:
        return TrainLoopCheckpointEndSave(
            model,
            *loaders,
            optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
            nn.NLLLoss(),
            project_name="e2e",
            experiment_name="cont",
            local_model_result_folder_path=tmp_path,
            hyperparams={"batch_size": 10},
            val_result_package=ClassificationResultPackage(),
            test_result_package=ClassificationResultPackage(),
            cloud_save_mode=None,
        )

    first = tracked(FFNet())
    first.fit(num_epochs=5)
    reloaded = tracked(FFNet())  # fresh weights and optimizer: everything comes from the checkpoint
    reloaded.fit(num_epochs=5 + more, resume_from="latest")
    first.fit(num_epochs=more)  # in memory, as the original's second TrainLoop over the same model
    for split in ("train", "validation", "test"):
        assert torch.equal(
            getattr(first, f"predict_on_{split}_set")()[0], getattr(reloaded, f"predict_on_{split}_set")()[0]
        )
        assert getattr(first, f"evaluate_loss_on_{split}_set")() == getattr(reloaded, f"evaluate_loss_on_{split}_set")()


def test_e2e_saved_final_model_predicts_the_same(tmp_path: Any) -> None:
    """Port of ``test_end2end_train_loop_checkpoint_pred.py``: the final model the tracked variant saved, loaded into
    a fresh model, predicts as the trained one (the original built a TrainLoop without optimizer for it, which is
    refused here; the predictor needs none)."""
    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.model_predict import PyTorchModelPredictor
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    seeded()
    data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (100, 30, 30)]
    loaders = [DataLoader(d, batch_size=10) for d in data]
    model = FFNet()
    tl = TrainLoopCheckpointEndSave(
        model,
        *loaders,
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        project_name="e2e",
        experiment_name="saved",
        local_model_result_folder_path=tmp_path,
        hyperparams={"batch_size": 10},
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
        cloud_save_mode=None,
    )
    tl.fit(num_epochs=5)
    reloaded = FFNet()
    reloaded.load_state_dict(torch.load(tl.experiment_dir / "model" / "model_state_dict.pt", weights_only=True))
    for loader, split in zip(loaders, ("train", "validation", "test"), strict=True):
        predictor = PyTorchModelPredictor(reloaded, loader)
        assert torch.equal(predictor.model_predict()[0], getattr(tl, f"predict_on_{split}_set")()[0])
        assert predictor.model_get_loss(nn.NLLLoss()) == getattr(tl, f"evaluate_loss_on_{split}_set")()


def _tracked_ff(tmp_path: Any, val_size: int, **kwargs: Any) -> tuple[Any, optim.Optimizer]:
    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    seeded()
    data = [TensorDataset(torch.randn(n, 50), torch.randint(0, 10, (n,))) for n in (100, val_size, 30)]
    model = FFNet()
    optimizer = optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))
    tl = TrainLoopCheckpointEndSave(
        model,
        *[DataLoader(d, batch_size=10) for d in data],
        optimizer,
        nn.NLLLoss(),
        project_name="e2e_train_loop_example",
        experiment_name="TrainLoopCheckpointEndSave_example",
        local_model_result_folder_path=tmp_path,
        hyperparams={"batch_size": 10},
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
        **kwargs,
    )
    return tl, optimizer


def test_e2e_saved_snapshot_holds_the_optimizer_and_the_schedulers(tmp_path: Any) -> None:
    """Port of ``test_e2e_ff_net_train_loop_tracking_saved_model_snapshot``: the last checkpoint holds the optimizer
    state (step, both Adam moments, param groups) and each scheduler callback's state as they are at the end of
    training. The original also put them into the final model's ``.pth``; here the final model holds the weights."""
    from aitoolbox.checkpointing import CheckpointManager
    from aitoolbox.torchtrain.schedulers.basic import StepLRScheduler
    from aitoolbox.torchtrain.schedulers.warmup import LinearWithWarmupScheduler

    schedulers = [StepLRScheduler(step_size=2), LinearWithWarmupScheduler(num_warmup_steps=1, num_training_steps=50)]
    tl, optimizer = _tracked_ff(tmp_path, 40, cloud_save_mode=None)
    tl.fit(num_epochs=5, callbacks=schedulers)

    infos = CheckpointManager(tl.checkpoint_dir).list()
    assert [info.epoch for info in infos] == [1, 2, 3, 4, 5]  # the original's _E0 .. _E4
    last = CheckpointManager(tl.checkpoint_dir).load()
    assert last.info.epoch == 5
    (saved,) = last["optimizer"]
    live = optimizer.state_dict()
    assert saved["param_groups"] == live["param_groups"]  # the schedulers' last learning rates included
    assert saved["state"].keys() == live["state"].keys() and len(live["state"]) == 6
    for idx, state in live["state"].items():
        assert saved["state"][idx].keys() == state.keys()
        assert int(saved["state"][idx]["step"]) == int(state["step"]) == 50
        assert torch.equal(saved["state"][idx]["exp_avg"], state["exp_avg"])
        assert torch.equal(saved["state"][idx]["exp_avg_sq"], state["exp_avg_sq"])
    for cb in schedulers:
        assert last["callbacks"][cb.state_key]["scheduler"] == cb.scheduler.state_dict()
    assert optimizer.param_groups[0]["lr"] != 0.001  # the schedulers did change it: the comparison is not vacuous
    final = torch.load(tl.experiment_dir / "model" / "model_state_dict.pt", weights_only=True)
    assert final.keys() == tl.model.state_dict().keys()
    assert all(torch.equal(final[k], v) for k, v in tl.model.state_dict().items())


def test_e2e_cloud_save_puts_every_file_in_the_bucket(
    tmp_path: Any, s3_server: Any, aws_env: None, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port of ``test_e2e_ff_net_train_loop_cloud_save`` (moto there, a real S3 server here): with
    ``cloud_save_mode='s3'`` and ``cloud_dir_prefix``, the bucket holds the experiment folder under
    ``<prefix>/<project>/<experiment>_<timestamp>/``: a checkpoint per epoch, the final model, the hyperparameters,
    the plots and the results: every file of the local folder, nothing else."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # the original's scripts name no endpoint
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    tl, _ = _tracked_ff(tmp_path, 30, cloud_save_mode="s3", bucket_name=bucket, cloud_dir_prefix="experiment_results")
    tl.fit(num_epochs=4)  # the original ran 10; 4 show the same
    assert tl.upload_report.ok, str(tl.upload_report)

    folder = f"experiment_results/e2e_train_loop_example/{tl.experiment_dir.name}"
    assert tl.experiment_dir.name.startswith("TrainLoopCheckpointEndSave_example_")
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert all(key.startswith(f"{folder}/") for key in keys)
    names = {key[len(folder) + 1 :] for key in keys}
    checkpoints = {name.split("/")[1] for name in names if name.startswith("checkpoint_model/ckpt-")}
    assert sorted(c[:10] for c in checkpoints) == [f"ckpt-e{e:04d}" for e in range(1, 5)]  # one per epoch
    assert {f"checkpoint_model/{c}/manifest.json" for c in checkpoints} <= names
    assert {
        "hyperparams.json",
        "model/model_state_dict.pt",
        "plots/loss.png",
        "results/training_history.json",
        "results/test_results.json",
        "results/validation_results.json",
    } <= names  # loss.png: training and validation loss; the script: test_original_examples
    local = {p.relative_to(tl.experiment_dir).as_posix() for p in tl.experiment_dir.rglob("*") if p.is_file()}
    assert names == {n for n in local if not any(part.startswith(".") for part in n.split("/"))}
