"""Mixed precision: TrainLoop(..., use_amp=True) (bf16 autocast on the CPU, fp16 + GradScaler on a GPU)."""

import torch
import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader
from _net import Net

from aitoolbox import TrainLoop, TTModel  # noqa: F401 (the original's import)
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation, ModelPerformancePrintReport

if __name__ == "__main__":
    batch_size = 100 * max(1, torch.cuda.device_count())  # the original: 100 per GPU
    model = Net()
    callbacks = [
        ModelPerformanceEvaluation(ClassificationResultPackage(), {}, on_train_data=True, on_val_data=True),
        ModelPerformancePrintReport(["train_Accuracy", "val_Accuracy"]),
    ]
    TrainLoop(
        model,
        mnist_loader(True, batch_size),
        mnist_loader(False, batch_size),
        mnist_loader(False, batch_size),
        optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999)),
        nn.NLLLoss(),
        use_amp=True,
    ).fit(num_epochs=10, callbacks=callbacks)
