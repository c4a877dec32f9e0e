"""The CNN the scripts share, written once (the originals each define the same MNIST network)."""

import torch.nn.functional as F
from torch import nn

from aitoolbox import TTModel


class MNISTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


class Net(TTModel):
    """The CNN as a TTModel, with the get_loss / get_predictions the original examples write."""

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
