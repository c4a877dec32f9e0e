"""A plain nn.Module fed by a feed definition: ModelWrap(model, feed_def), the loop called as tl(...)."""

import argparse
import os

import torch.nn as nn
import torch.optim as optim
from _data import mnist_loader
from _net import MNISTNet

from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformanceEvaluation, ModelPerformancePrintReport
from aitoolbox.torchtrain.data.batch_model_feed_defs import AbstractModelFeedDefinition
from aitoolbox.torchtrain.model import ModelWrap
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

HERE = os.path.dirname(os.path.abspath(__file__))


class MNISTModelFeedDefinition(AbstractModelFeedDefinition):
    def get_loss(self, model, batch_data, criterion, device):
        data, target = batch_data
        return criterion(model(data.to(device)), target.to(device))

    def get_predictions(self, model, batch_data, device):
        data, y_test = batch_data
        return model(data.to(device)).argmax(dim=1).cpu(), y_test, {}


parser = argparse.ArgumentParser(description="MNIST")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--test-batch-size", type=int, default=1000)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--momentum", type=float, default=0.5)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

train_loader = mnist_loader(True, args.batch_size, shuffle=True)
test_loader = mnist_loader(False, args.test_batch_size, shuffle=True)
net = MNISTNet()
optimizer = optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
callbacks = [
    ModelPerformanceEvaluation(ClassificationResultPackage(), args.__dict__, on_train_data=True, on_val_data=True),
    ModelPerformancePrintReport(["train_Accuracy", "val_Accuracy"], strict_metric_reporting=True),
]
TrainLoopCheckpointEndSave(
    ModelWrap(net, MNISTModelFeedDefinition()),
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
