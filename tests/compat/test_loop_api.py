"""The original AIToolbox loop API that is not in its example scripts: models, callbacks, hooks, evaluation
arguments, names. Real training on small data."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox import ModelWrap, TrainLoop, TTModel
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.callbacks.abstract import AbstractCallback
from aitoolbox.torchtrain.callbacks.basic import (
    AllPredictionsSame,
    DataSubsetTestRun,
    EmailNotification,
    FunctionOnTrainLoop,
    TerminateOnNaN,
    ThresholdEarlyStopping,
)
from aitoolbox.torchtrain.callbacks.gradient import GradNormClip, GradValueClip
from aitoolbox.torchtrain.callbacks.performance_eval import (
    MetricHistoryRename,
    ModelPerformanceEvaluation,
    ModelPerformancePrintReport,
    ModelTrainHistoryFileWriter,
)
from aitoolbox.torchtrain.data.batch_model_feed_defs import AbstractModelFeedDefinition
from aitoolbox.torchtrain.model import MultiGPUModelWrap, TTBasicModel
from aitoolbox.torchtrain.parallel import TTDataParallel


def loaders(n: int = 96) -> tuple[Any, Any]:
    return make_classification_loader(n, batch_size=16), make_classification_loader(48, batch_size=16, seed=1)


class Feed(AbstractModelFeedDefinition):
    def __init__(self) -> None:
        self.calls = {"loss": 0, "eval": 0, "pred": 0}

    def get_loss(self, model: nn.Module, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        self.calls["loss"] += 1
        x, y = batch_data
        return criterion(model(x.to(device)), y.to(device))

    def get_loss_eval(self, model: nn.Module, batch_data: Any, criterion: Any, device: Any) -> torch.Tensor:
        self.calls["eval"] += 1
        return self.get_loss(model, batch_data, criterion, device)

    def get_predictions(self, model: nn.Module, batch_data: Any, device: Any) -> tuple[Any, Any, Any]:
        self.calls["pred"] += 1
        x, y = batch_data
        return model(x.to(device)).argmax(1), y, {"n": [len(y)]}


def test_model_wrap_with_a_feed_definition_trains_and_saves_the_module() -> None:
    train, val = loaders()
    net, feed = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), Feed()
    tl = TrainLoop(
        ModelWrap(net, feed), train, val, None, torch.optim.Adam(net.parameters(), lr=0.05), nn.CrossEntropyLoss()
    )
    tl(num_epochs=3)  # the original's call form
    assert feed.calls["eval"] == 3 * len(val)  # val_loss every epoch, by the feed's get_loss_eval
    assert feed.calls["loss"] == 3 * len(train) + feed.calls["eval"]  # (which calls its get_loss)
    _, _, meta = tl.predict_on_validation_set()
    assert feed.calls["pred"] == len(val) and meta == {"n": [16, 16, 16]}
    assert tl.train_history["val_loss"][-1] < tl.train_history["val_loss"][0]
    assert set(tl.model.state_dict()) == {f"module.{k}" for k in net.state_dict()}
    with pytest.raises(Exception, match="get_predictions"):
        ModelWrap(net, object())
    with pytest.raises(Exception, match="num_inputs applies only without"):
        ModelWrap(net, feed, num_inputs=1)


def test_tt_basic_model_and_multi_gpu_model_wrap() -> None:
    class Basic(TTBasicModel):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    for model in (Basic(), MultiGPUModelWrap(nn.Linear(8, 3))):
        train, val = loaders()
        tl = TrainLoop(model, train, val, None, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss())
        tl.fit(num_epochs=4)
        assert tl.train_history["loss"][-1] < tl.train_history["loss"][0]
        y_pred, y_true, _ = tl.predict_on_validation_set()
        assert y_pred.shape == (48, 3) and y_true.shape == (48,)


def test_data_parallel_is_refused_with_the_replacement() -> None:
    with pytest.raises(LoopConfigError, match="gpu_mode='ddp'"):
        TTDataParallel(nn.Linear(2, 2))
    with pytest.raises(LoopConfigError, match="FunctionOnTrainLoop"):
        EmailNotification("me", "me@example.com", "you@example.com")


def test_original_callbacks_behave() -> None:
    train, val = loaders()
    model = TinyClassifier()
    seen: list[int] = []
    report = io.StringIO()
    callbacks = [
        ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]), {"lr": 0.05}, eval_frequency=2),
        MetricHistoryRename("loss", "train_loss_copy"),
        ModelPerformancePrintReport(["val_Accuracy"], on_each_epoch=False, stream=report),
        FunctionOnTrainLoop(lambda tl: seen.append(tl.epoch), epoch_end=True),
        GradNormClip(max_grad_norm=1.0),
        GradValueClip(max_grad_value=5.0),
        ThresholdEarlyStopping("loss", threshold=-1.0, patience=2),  # a loss never below -1: stops after 3 epochs
    ]
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss())
    tl.fit(num_epochs=10, callbacks=callbacks)
    assert seen == [0, 1, 2] and tl.epochs_done == 3
    assert len(tl.train_history["val_accuracy"]) == 2  # epochs 0 and 2 (eval_frequency=2)
    assert tl.train_history["train_loss_copy"] == tl.train_history["loss"]
    assert (
        report.getvalue().splitlines()[1] == f"train_end_val_Accuracy: {tl.train_history['train_end_val_accuracy'][0]}"
    )
    with pytest.raises(LoopConfigError, match="give max_norm= \\(or the original's max_grad_norm=\\)"):
        GradNormClip()


def test_print_report_strict_about_missing_metrics() -> None:
    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match="reports 'val_Accuracy', which nothing in this run puts in the training"):
        tl.fit(num_epochs=1, callbacks=[ModelPerformancePrintReport(["val_Accuracy"], stream=io.StringIO())])
    assert tl.iteration == 0  # named before training, not after it


def test_terminate_on_nan_by_monitor_and_all_predictions_same() -> None:
    train, val = loaders()
    model = TinyClassifier()
    nan_metric = FunctionOnTrainLoop(
        lambda tl: tl.train_history.insert_single_result_into_history("acc", math.nan), epoch_end=True
    )
    same = AllPredictionsSame(value=-1, stop_training=True)  # never true: class indices are >= 0
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    tl.fit(num_epochs=5, callbacks=[nan_metric, TerminateOnNaN(monitor="acc"), same])
    assert tl.epochs_done == 1 and "acc = nan" in (tl.stop_reason or "")


def test_data_subset_test_run() -> None:
    train, val = loaders()
    model = TinyClassifier()
    batches: list[int] = []
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    count = FunctionOnTrainLoop(lambda t: batches.append(t.iteration), epoch_end=True)
    tl.fit(num_epochs=2, callbacks=[DataSubsetTestRun(num_train_batches=2, num_val_batches=1), count])
    assert batches == [2, 4]  # two batches per epoch
    assert len(tl.predict_on_validation_set()[1]) == 16  # one validation batch


class BatchSpy(AbstractCallback):
    def __init__(self) -> None:
        super().__init__("spy")
        self.seen: list[tuple[int, str]] = []

    def on_after_batch_prediction(
        self, y_pred_batch: Any, y_test_batch: Any, metadata_batch: Any, dataset_info: dict[str, Any]
    ) -> None:
        self.seen.append((len(y_test_batch), dataset_info["type"]))


def test_on_after_batch_prediction_and_evaluation_arguments() -> None:
    train, val = loaders()
    model = TinyClassifier()
    spy = BatchSpy()
    tl = TrainLoop(model, train, val, val, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    tl.fit(num_epochs=1, callbacks=[spy])
    tl.predict_on_validation_set()
    assert spy.seen == []  # only with execute_callbacks=True, as the original
    tl.predict_on_test_set(force_prediction=True, execute_callbacks=True)
    assert spy.seen == [(16, "test")] * 3
    assert tl.evaluate_loss_on_validation_set(force_prediction=True, float_dict_format=True) == pytest.approx(
        tl.train_history["val_loss"][-1]
    )


def test_original_metric_names_read_as_ours() -> None:
    from aitoolbox.loop import TrainingHistory
    from aitoolbox.loop.history import canonical_metric

    h = TrainingHistory({"val_accuracy": [0.5], "train_end_val_mse": [1.0]})
    assert h["val_Accuracy"] == [0.5] and "val_Accuracy" in h and h.get_last("val_Accuracy") == 0.5
    assert canonical_metric("train_end_val_Mean_squared_error") == "train_end_val_mse"
    with pytest.raises(KeyError):
        h["val_Precision"]


def test_device_idx_execution_is_checked() -> None:
    with pytest.raises(LoopConfigError, match="device_idx_execution must be None"):
        AbstractCallback("x", device_idx_execution=-1)


def test_history_file_writer_needs_a_folder_with_a_plain_loop(tmp_path: Path) -> None:
    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match="needs \\['project_name', 'experiment_name'"):
        tl.fit(num_epochs=1, callbacks=[ModelTrainHistoryFileWriter()])
    writer = ModelTrainHistoryFileWriter(project_name="p", experiment_name="e", local_model_result_folder_path=tmp_path)
    tl.fit(num_epochs=2, callbacks=[writer])
    (folder,) = (tmp_path / "p").iterdir()
    assert (folder / "results" / "training_history.csv").read_text().count("\n") == 3  # header + 2 epochs


class RankRecorder(AbstractCallback):
    def __init__(self, folder: str) -> None:
        super().__init__("rank recorder", device_idx_execution=1)
        self.folder = folder

    def on_multiprocess_start(self) -> None:
        Path(self.folder, f"start-{self.train_loop_obj.distributed.rank}").touch()

    def on_epoch_end(self) -> None:
        Path(self.folder, f"epoch-{self.train_loop_obj.distributed.rank}-{self.train_loop_obj.epoch}").touch()


@pytest.mark.slow
def test_multiprocess_start_device_idx_execution_and_the_original_ddp_fit_arguments(tmp_path: Path) -> None:
    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), gpu_mode="ddp")
    # the original's fit(**ddp_kwargs): num_gpus -> processes, ddp_model_args -> DDP options,
    # in_process_data_load -> callbacks whose on_multiprocess_start runs in every process
    tl.fit(
        num_epochs=2,
        num_gpus=2,
        ddp_model_args={"bucket_cap_mb": 10},
        backend="gloo",
        in_process_data_load=RankRecorder(str(tmp_path)),
    )
    assert tl.num_processes == 2 and tl.ddp_options == {"bucket_cap_mb": 10}
    # device_idx_execution=1: only local rank 1 runs the callback's hooks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1-0", "epoch-1-1", "start-1"]


def test_original_ddp_fit_arguments_refused_where_they_mean_nothing() -> None:
    train, val = loaders()
    model = TinyClassifier()
    single = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match="configure gpu_mode='ddp'; this TrainLoop is gpu_mode='single'"):
        single.fit(num_epochs=1, ddp_model_args={})
    ddp = TrainLoop(
        model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), gpu_mode="ddp"
    )
    with pytest.raises(LoopConfigError, match="torchrun --nnodes=N --node-rank=R"):
        ddp.fit(num_epochs=1, num_nodes=2, node_rank=1)
    with pytest.raises(LoopConfigError, match="the loop uses nccl on CUDA and gloo on the CPU"):
        ddp.fit(num_epochs=1, backend="mpi")


def test_tt_model_is_the_engine_class() -> None:
    from aitoolbox.loop import TTModel as EngineTTModel

    assert TTModel is EngineTTModel


def test_scheduler_callbacks() -> None:
    from aitoolbox.torchtrain.callbacks import LinearWithWarmupScheduler, ReduceLROnPlateauMetricScheduler
    from aitoolbox.torchtrain.schedulers.basic import StepLRScheduler

    train, val = loaders()  # 6 batches per epoch
    model = TinyClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = StepLRScheduler(step_size=1, gamma=0.5)
    tl = TrainLoop(model, train, val, None, opt, nn.CrossEntropyLoss())
    tl.fit(num_epochs=3, callbacks=[step])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3) and tl.get_schedulers() == [step]

    model = TinyClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tl = TrainLoop(model, train, val, None, opt, nn.CrossEntropyLoss())
    tl.num_epochs, tl.grad_accumulation = 2, 2  # what fit sets: get_num_training_steps reads them
    total = tl.get_num_training_steps()
    assert total == 6 // 2 * 2
    warm = LinearWithWarmupScheduler(num_warmup_steps=2, num_training_steps=total)
    tl.fit(num_epochs=2, grad_accumulation=2, callbacks=[warm])
    # stepped after each of the 6 optimizer steps: lr = 0.1 * (total - 6) / (total - 2) = 0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)

    model = TinyClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = ReduceLROnPlateauMetricScheduler("val_Accuracy", mode="max", patience=0, factor=0.5, threshold=10.0)
    tl = TrainLoop(model, train, val, None, opt, nn.CrossEntropyLoss())
    evaluation = ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]), {})
    tl.fit(num_epochs=2, callbacks=[evaluation, plateau])
    # the first epoch sets the best; the second does not improve on it by a factor 10: halved once
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)


def test_original_loop_helpers(caplog: pytest.LogCaptureFixture) -> None:
    import re

    train, val = loaders()
    model = TinyClassifier()
    kept: list[Any] = []

    def collate(batch_pred: Any, preds: list[Any]) -> list[Any]:
        kept.append(batch_pred)
        return [*preds, batch_pred]

    tl = TrainLoop(
        model,
        train,
        val,
        None,
        torch.optim.Adam(model.parameters()),
        nn.CrossEntropyLoss(),
        collate_batch_pred_fn=collate,
        pred_transform_fn=list,
        print_callbacks=True,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", tl.experiment_timestamp)
    assert tl.is_main_process and tl.is_main_process() is True
    with caplog.at_level("INFO", logger="aitoolbox.loop._epoch"):
        tl.fit(num_epochs=1, callbacks=[BatchSpy()])
    assert "callbacks: ['spy', 'ProgressLog']" in caplog.text  # the user's, and the progress display (no terminal)
    y_pred, _, _ = tl.predict_on_validation_set()
    assert isinstance(y_pred, list) and len(y_pred) == 3 and len(kept) == 6  # y_pred and y_true of 3 batches
    tl.insert_metric_result_into_history("custom", {"a": 1.0})
    history = tl.train_history
    history["other"] = 2.0  # the original's __setitem__ appends
    assert history["other"] == [2.0] and history.get_train_history()["custom"] == [{"a": 1.0}]
    assert history.get_train_history_dict(flatten_dict=True)["custom"] == [{"a": 1.0}]
    from aitoolbox.loop import TrainingHistory

    assert TrainingHistory().wrap_pre_prepared_history({"loss": [1.0]})["loss"] == [1.0]


def test_model_predictor_and_the_save_callbacks_refused(tmp_path: Path) -> None:
    import json

    from aitoolbox.torchtrain.callbacks.model_load import ModelLoadContinueTraining
    from aitoolbox.torchtrain.callbacks.model_save import ModelCheckpoint, ModelIterationCheckpoint
    from aitoolbox.torchtrain.model_predict import PyTorchModelPredictor

    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss())
    tl.fit(num_epochs=2)
    predictor = PyTorchModelPredictor(model, val)
    y_pred, y_true, _ = predictor.model_predict()
    expected_pred, expected_true, _ = tl.predict_on_validation_set()
    assert torch.equal(y_pred, expected_pred) and torch.equal(y_true, expected_true)
    assert predictor.model_get_loss(nn.CrossEntropyLoss()) == pytest.approx(tl.evaluate_loss_on_validation_set())
    pkg = predictor.evaluate_result_package(ClassificationResultPackage(metrics=["accuracy"]))
    accuracy = float((expected_pred == expected_true).float().mean())
    assert pkg.get_results() == {"accuracy": pytest.approx(accuracy)}  # type: ignore[union-attr]
    folder = predictor.evaluate_model(
        ClassificationResultPackage(metrics=["accuracy"]), "p", "eval", tmp_path, save_true_pred_labels=True
    )
    results = json.loads((folder / "results" / "ClassificationResultPackage_results.json").read_text())
    assert results == {"accuracy": pytest.approx(accuracy)}
    with pytest.raises(LoopConfigError, match="saves locally only"):
        predictor.evaluate_model(ClassificationResultPackage(), "p", "eval", tmp_path, cloud_save_mode="s3")
    with pytest.raises(LoopConfigError, match="TrainLoopCheckpoint"):
        ModelCheckpoint("p", "e", tmp_path, {})
    with pytest.raises(LoopConfigError, match="iteration_save_freq=save_frequency"):
        ModelIterationCheckpoint(10, "p", "e", tmp_path, {})
    with pytest.raises(LoopConfigError, match="resume_from='latest'"):
        ModelLoadContinueTraining("2020-01-01_00-00-00")


def test_source_dirs_are_zipped_into_the_experiment(tmp_path: Path) -> None:
    import zipfile

    from aitoolbox import ClassificationResultPackage as Classification
    from aitoolbox import TrainLoopCheckpointEndSave

    src = tmp_path / "mylib"
    (src / "sub").mkdir(parents=True)
    (src / "model.py").write_text("X = 1\n")
    (src / "sub" / "data.py").write_text("Y = 2\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "secret.txt").write_text("not source code")
    (src / "secret_link.txt").symlink_to(tmp_path / "secret.txt")  # links lead outside: never archived
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keys.py").write_text("K = 3\n")
    (src / "linked").symlink_to(tmp_path / "elsewhere")
    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoopCheckpointEndSave(
        model,
        train,
        val,
        val,
        torch.optim.Adam(model.parameters()),
        nn.CrossEntropyLoss(),
        "p",
        "e",
        tmp_path / "runs",
        {},
        test_result_package=Classification(),
        source_dirs=[str(src)],
    )
    tl.fit(num_epochs=1)
    with zipfile.ZipFile(tl.experiment_dir / "code" / "mylib.zip") as archive:
        assert sorted(archive.namelist()) == ["mylib/model.py", "mylib/sub/data.py"]
        assert archive.read("mylib/sub/data.py") == b"Y = 2\n"
    with pytest.raises(LoopConfigError, match="are not folders"):
        TrainLoopCheckpointEndSave(
            model,
            train,
            val,
            val,
            torch.optim.Adam(model.parameters()),
            nn.CrossEntropyLoss(),
            "p",
            "e",
            tmp_path / "runs",
            {},
            test_result_package=Classification(),
            source_dirs=[str(tmp_path / "nope")],
        )


def test_tensorboard_callbacks_of_the_original(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aitoolbox.torchtrain.callbacks import TensorboardFullTracking, TensorboardTrainHistoryMetric

    train, val = loaders()  # 6 batches per epoch
    model = TinyClassifier()
    tl = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    full = TensorboardFullTracking(
        metric_names=["loss"],
        batch_log_frequency=2,
        project_name="p",
        experiment_name="e",
        local_model_result_folder_path=tmp_path,
    )
    history_only = TensorboardTrainHistoryMetric(log_dir=tmp_path / "hist")
    tl.fit(num_epochs=2, callbacks=[full, history_only])
    acc = EventAccumulator(str(tmp_path / "p" / "e" / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["epoch/loss", "train/loss_step"]
    assert [e.step for e in acc.Scalars("train/loss_step")] == [2, 4, 6, 8, 10, 12]
    acc = EventAccumulator(str(tmp_path / "hist"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["epoch/loss", "epoch/val_loss"]


def test_gradient_stats_print(caplog: pytest.LogCaptureFixture) -> None:
    """Port of the original's test_gradient_callbacks.py::test_gradients_report (logged, not printed)."""
    from aitoolbox.torchtrain.callbacks.gradient import GradientStatsPrint

    class SmallFFNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(10, 8), nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.l2(torch.relu(self.l1(x)))).squeeze(1)

    model = SmallFFNet()

    class LastGrads(AbstractCallback):  # the last step's gradients, read independently
        def on_after_gradient_update(self, optimizer_idx: int) -> None:
            self.grads = [torch.cat([p.grad.reshape(-1) for p in m.parameters()]) for m in (model.l1, model.l2)]

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(100, 10, generator=g), torch.rand(100, generator=g))
    spy = LastGrads()
    tl = TrainLoop(
        model,
        torch.utils.data.DataLoader(data, batch_size=10),
        None,
        None,
        torch.optim.SGD(model.parameters(), lr=0.01),
        nn.BCELoss(),
    )
    with caplog.at_level("INFO", logger="aitoolbox.torchtrain.callbacks.gradient"):
        tl.fit(num_epochs=1, callbacks=[spy, GradientStatsPrint(lambda m: [m.l1, m.l2])])
    (record,) = [r for r in caplog.records if "gradients stats" in r.getMessage()]  # once, at the epoch end
    lines = record.getMessage().splitlines()
    for i, flat in enumerate(spy.grads):
        mean, std = (float(v) for v in lines[1 + 2 * i].split("Mean: ")[1].split("; Std "))
        zeros = float(lines[2 + 2 * i].split(": ")[1])
        assert mean == pytest.approx(float(flat.mean()), rel=1e-5, abs=1e-9)
        assert std == pytest.approx(float(flat.std(unbiased=False)), rel=1e-5)
        assert zeros == pytest.approx(float((flat == 0).float().mean()))


def test_gpu_mode_dp_is_refused_with_the_replacement() -> None:
    train, val = loaders()
    model = TinyClassifier()
    with pytest.raises(LoopConfigError, match="gpu_mode='dp' .* use gpu_mode='ddp'"):
        TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), gpu_mode="dp")


@pytest.mark.slow
def test_in_multi_process_data_load(tmp_path: Path) -> None:
    from aitoolbox.torchtrain.callbacks.ddp import DistributedSamplerSetEpoch, InMultiProcessDataLoad

    def build() -> Any:
        Path(tmp_path, f"built-{torch.distributed.get_rank()}").touch()
        return make_classification_loader(64, batch_size=16, seed=3)

    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoop(
        model,
        train,
        val,
        None,
        torch.optim.Adam(model.parameters()),
        nn.CrossEntropyLoss(),
        gpu_mode="ddp",
        num_processes=2,
    )
    tl.fit(num_epochs=1, callbacks=[InMultiProcessDataLoad(train_loader_build_fn=build, val_loader_build_fn=False)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built-0", "built-1"]
    assert tl.iteration == 2  # 64 samples / 2 ranks / 16 per batch: the loader built in the processes was trained on

    sampler = torch.utils.data.DistributedSampler(range(10), num_replicas=2, rank=0)
    single = TrainLoop(model, train, val, None, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss())
    single.fit(num_epochs=3, callbacks=[DistributedSamplerSetEpoch(sampler, None, None)])
    assert sampler.epoch == 2


def test_checkpoint_ranking_by_an_original_metric_name(tmp_path: Path) -> None:
    from aitoolbox import TrainLoopCheckpoint

    train, val = loaders()
    model = TinyClassifier()
    tl = TrainLoopCheckpoint(
        model,
        train,
        val,
        None,
        torch.optim.Adam(model.parameters(), lr=0.05),
        nn.CrossEntropyLoss(),
        "p",
        "e",
        tmp_path,
        {},
        rm_subopt_local_models="val_Accuracy",
        num_best_checkpoints_kept=1,
    )
    evaluation = ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]), {})
    tl.fit(num_epochs=4, callbacks=[evaluation])
    kept_epochs = sorted(int(p.name[6:10]) for p in (tl.experiment_dir / "checkpoint_model").glob("ckpt-*"))
    accuracy = tl.train_history["val_accuracy"]
    assert kept_epochs[-1] == 4  # the newest is always kept
    best = [e for e in kept_epochs if e != 4] or [4]  # and one best by val_accuracy (it may be the newest)
    assert len(kept_epochs) <= 2 and accuracy[best[0] - 1] == max(accuracy)


@pytest.mark.slow
def test_a_ddp_launch_leaves_the_signal_handlers_as_they_were() -> None:
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    train, val = loaders()
    model = TinyClassifier()
    TrainLoop(
        model,
        train,
        val,
        None,
        torch.optim.Adam(model.parameters()),
        nn.CrossEntropyLoss(),
        gpu_mode="ddp",
        num_processes=2,
    ).fit(num_epochs=1)
    # torch's launcher installs handlers that raise SignalException; a later fit's preemption handler chained to them
    assert {s: signal.getsignal(s) for s in before} == before
