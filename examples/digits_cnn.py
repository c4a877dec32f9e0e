"""A small CNN TTModel and DataLoaders over scikit-learn's bundled 8x8 digits (1,797 images, no download)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.torchtrain.model import TTModel


class CNNModel(TTModel):
    """Two conv layers and a linear head; outputs log-probabilities (pair it with ``nn.NLLLoss``)."""

    def __init__(self, channels: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.features(x)), dim=1)

    def get_loss(self, batch, criterion, device):
        x, y = batch
        return criterion(self(x.to(device)), y.to(device))

    def get_predictions(self, batch, device):
        x, y = batch
        return self(x.to(device)).argmax(dim=1).cpu(), y, None


def digits_loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train / validation / test loaders (70 / 15 / 15 %, stratified by a fixed permutation)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train, n_val = int(0.7 * len(y)), int(0.15 * len(y))
    parts = [slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)]
    train, val, test = (TensorDataset(x[p], y[p]) for p in parts)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
        DataLoader(val, batch_size=256),
        DataLoader(test, batch_size=256),
    )
