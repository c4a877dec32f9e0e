"""Mixed precision: TrainLoop(..., use_amp=True) (bf16 autocast on the CPU, fp16 + GradScaler on a GPU)."""

import torch
import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader
from _net import MNISTNet

from aitoolbox import TrainLoop, TTModel
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation, ModelPerformancePrintReport


class Net(TTModel):
    def __init__(self):
        super().__init__()
        self.net = MNISTNet()

    def forward(self, x):
        return self.net(x)

    def get_loss(self, batch_data, criterion, device):
        data, target = batch_data
        return criterion(self(data.to(device)), target.to(device))

    def get_predictions(self, batch_data, device):
        data, y_test = batch_data
        return self(data.to(device)).argmax(dim=1).cpu(), y_test, {}


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
