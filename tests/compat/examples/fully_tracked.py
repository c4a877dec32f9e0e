"""A fully tracked experiment: checkpoints, final model, results, plots and history, mirrored to S3."""

import os

import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader
from _net import Net

from aitoolbox import TrainLoopCheckpointEndSave, TTModel  # noqa: F401 (the original's import)
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.basic import EarlyStopping
from aitoolbox.torchtrain.callbacks.performance_eval import (
    ModelPerformanceEvaluation,
    ModelPerformancePrintReport,
    ModelTrainHistoryFileWriter,
    ModelTrainHistoryPlot,
)

HERE = os.path.dirname(os.path.abspath(__file__))


if __name__ == "__main__":
    model = Net()
    callbacks = [
        ModelPerformanceEvaluation(ClassificationResultPackage(), {}, on_train_data=True, on_val_data=True),
        ModelPerformancePrintReport(["train_Accuracy", "val_Accuracy"]),
        ModelTrainHistoryPlot(),
        ModelTrainHistoryFileWriter(),
        EarlyStopping(patience=5),
    ]
    TrainLoopCheckpointEndSave(
        model,
        mnist_loader(True, 100),
        mnist_loader(False, 100),
        mnist_loader(False, 100),
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        project_name="tl_full_experiment_tracking",
        experiment_name="tutorial_example",
        local_model_result_folder_path=os.environ.get("RESULTS_DIR", HERE),
        hyperparams={},
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
        cloud_save_mode="s3",
        bucket_name="results",
        rm_subopt_local_models=True,
        num_best_checkpoints_kept=3,
    ).fit(num_epochs=10, callbacks=callbacks)
