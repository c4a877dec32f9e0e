"""The main job: a small CNN on scikit-learn's digits with TrainLoopCheckpointEndSave, saved to local disk.

Each epoch prints the loss, validation loss and validation accuracy; at the end the validation and test sets are
evaluated with ClassificationResultPackage and the experiment folder (checkpoints, final model, results, history,
plots, summary.md) is written. Run it with ``bash scripts/demo.sh`` (or ``uv run python examples/train_digits.py``).
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

from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.torchtrain.callbacks import Callback, ModelPerformanceEvaluation
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave


class PrintEpoch(Callback):
    """Prints one line per epoch from the training history."""

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        h = tl.train_history
        print(
            f"epoch {tl.epoch + 1:2d}/{tl.num_epochs}  loss {h['loss'][-1]:.4f}  val_loss {h['val_loss'][-1]:.4f}  "
            f"val_accuracy {h['val_accuracy'][-1]:.3f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default="results_dir")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    train_loader, val_loader, test_loader = digits_loaders(seed=args.seed)

    hyperparams = {"lr": 0.002, "betas": (0.9, 0.999), "epochs": args.epochs, "batch_size": 64, "seed": args.seed}
    model = CNNModel()
    optimizer = optim.Adam(model.parameters(), lr=hyperparams["lr"], betas=hyperparams["betas"])
    criterion = nn.NLLLoss()

    tl = TrainLoopCheckpointEndSave(
        model,
        train_loader,
        val_loader,
        test_loader,
        optimizer,
        criterion,
        project_name="digits_demo",
        experiment_name="cnn",
        local_model_result_folder_path=args.results_dir,
        hyperparams=hyperparams,
        val_result_package=ClassificationResultPackage(),
        test_result_package=ClassificationResultPackage(),
        cloud_save_mode="local",
        device="cpu",
    )
    start = time.perf_counter()
    model = tl.fit(
        num_epochs=args.epochs,
        callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"])), PrintEpoch()],
    )
    test_acc = tl.results["test"]["accuracy"]
    print(f"test accuracy {test_acc:.3f}  ({time.perf_counter() - start:.1f} s on {tl.device})")
    print(f"experiment folder {tl.experiment_dir}  (read summary.md first)")
    return test_acc


if __name__ == "__main__":
    main()
