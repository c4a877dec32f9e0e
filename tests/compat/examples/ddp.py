"""Distributed data parallel from a plain `python` run: TrainLoop(..., gpu_mode='ddp').fit(...)."""

import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader
from _net import Net

from aitoolbox import TrainLoop, TTModel  # noqa: F401 (the original's import)
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation, ModelPerformancePrintReport

if __name__ == "__main__":
    model = Net()
    callbacks = [
        ModelPerformanceEvaluation(ClassificationResultPackage(), {}, on_train_data=True, on_val_data=True),
        ModelPerformancePrintReport(["train_Accuracy", "val_Accuracy"]),
    ]
    TrainLoop(
        model,
        mnist_loader(True, 100),
        mnist_loader(False, 100),
        mnist_loader(False, 100),
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        gpu_mode="ddp",
    ).fit(num_epochs=10, callbacks=callbacks)
