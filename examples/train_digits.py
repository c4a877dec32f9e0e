"""The main job: train a small CNN on scikit-learn's digits with TrainLoop and report loss, val loss and accuracy.

Run it with ``bash scripts/demo.sh`` (or ``uv run python examples/train_digits.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn, optim

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_cnn import CNNModel, digits_loaders

from aitoolbox.torchtrain.callbacks import Callback
from aitoolbox.torchtrain.train_loop import TrainLoop


class ValAccuracy(Callback):
    """Adds ``val_accuracy`` to the history at every epoch end and prints the epoch's line."""

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        y_pred, y_true, _ = tl.predict_on_validation_set()
        acc = (y_pred == y_true).float().mean().item()
        tl.train_history.insert_single_result_into_history("val_accuracy", acc)
        print(
            f"epoch {tl.epoch + 1:2d}/{tl.num_epochs}  loss {tl.train_history['loss'][-1]:.4f}  "
            f"val_loss {tl.train_history['val_loss'][-1]:.4f}  val_accuracy {acc:.3f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    train_loader, val_loader, test_loader = digits_loaders(seed=args.seed)

    model = CNNModel()
    optimizer = optim.Adam(model.parameters(), lr=0.002, betas=(0.9, 0.999))
    criterion = nn.NLLLoss()

    tl = TrainLoop(model, train_loader, val_loader, test_loader, optimizer, criterion, device="cpu")
    start = time.perf_counter()
    model = tl.fit(num_epochs=args.epochs, callbacks=[ValAccuracy()])

    y_pred, y_true, _ = tl.predict_on_test_set()
    test_acc = (y_pred == y_true).float().mean().item()
    print(f"test accuracy {test_acc:.3f}  ({time.perf_counter() - start:.1f} s on {tl.device})")
    return test_acc


if __name__ == "__main__":
    main()
