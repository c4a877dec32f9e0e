"""A TTModel with its own get_loss/get_predictions, trained with TrainLoopCheckpointEndSave called as tl(...)."""

import argparse
import os

import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader

from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation, ModelPerformancePrintReport
from aitoolbox.torchtrain.model import TTModel
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

HERE = os.path.dirname(os.path.abspath(__file__))


class Net(TTModel):
    """The model defines how it is fed: get_loss and get_predictions next to forward."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(self.features(x)).log_softmax(dim=1)

    def get_loss(self, batch_data, criterion, device):
        images, labels = batch_data
        return criterion(self(images.to(device)), labels.to(device))

    def get_predictions(self, batch_data, device):
        images, labels = batch_data
        return self(images.to(device)).argmax(dim=1).cpu(), labels, {}


parser = argparse.ArgumentParser(description="MNIST")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--test-batch-size", type=int, default=1000)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--momentum", type=float, default=0.5)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

train_loader = mnist_loader(True, args.batch_size, shuffle=True)
test_loader = mnist_loader(False, args.test_batch_size, shuffle=True)
net = Net()
optimizer = optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
callbacks = [
    ModelPerformanceEvaluation(ClassificationResultPackage(), args.__dict__, on_train_data=True, on_val_data=True),
    ModelPerformancePrintReport(["train_Accuracy", "val_Accuracy"], strict_metric_reporting=True),
]
TrainLoopCheckpointEndSave(
    net,
    train_loader,
    test_loader,
    test_loader,
    optimizer,
    nn.NLLLoss(),
    project_name="localRunCNNTest",
    experiment_name="CNN_MNIST_test",
    local_model_result_folder_path=os.environ.get("RESULTS_DIR", HERE),
    hyperparams=args.__dict__,
    test_result_package=ClassificationResultPackage(),
    cloud_save_mode=None,
)(num_epochs=5, callbacks=callbacks)
