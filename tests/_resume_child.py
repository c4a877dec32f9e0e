"""Child process for the exact-resume tests: trains, optionally SIGKILLs itself, or resumes; writes what it saw.

usage: _resume_child.py ROOT OUT MODE [KILL_AT] [WORKERS]
  MODE straight: 4 epochs.   crash: 4 epochs, SIGKILL at KILL_AT ("epoch:N" or "iter:N").   resume: resume 'latest'.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from aitoolbox.loop.callbacks import Callback, EarlyStopping, LRSchedulerCallback
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint


class Recorder(Callback):
    """Records (iteration, fingerprint of the batch's loss) and kills the process at the requested point."""

    def __init__(self, kill_at: str | None) -> None:
        super().__init__("recorder")
        self.kill_at = kill_at
        self.seen: list[tuple[int, float]] = []

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        self.seen.append((tl.iteration, tl.last_loss.item()))
        if self.kill_at == f"iter:{tl.iteration}":
            self._die()

    def on_epoch_begin(self) -> None:
        if self.kill_at == f"epoch:{self.train_loop_obj.epoch}":
            self._die()

    def _die(self) -> None:
        self.train_loop_obj.checkpoint_manager.wait()  # what was committed is on disk; the rest is lost
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    root, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_at = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    torch.manual_seed(0 if mode != "resume" else 4321)  # a resumed process starts from a different RNG state
    model = TinyClassifier(dropout=0.2)
    train = DataLoader(make_classification_data(120), batch_size=8, shuffle=True, num_workers=workers)
    val = DataLoader(make_classification_data(40, seed=1), batch_size=16)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    tl = TrainLoopCheckpoint(
        model, train, val, None, opt, nn.CrossEntropyLoss(),
        project_name="proj", experiment_name="exact", local_model_result_folder_path=root,
        hyperparams={"lr": 1e-2}, iteration_save_freq=5, device="cpu",
    )  # fmt: skip
    recorder = Recorder(kill_at if mode == "crash" else None)
    callbacks = [
        recorder,
        EarlyStopping(monitor="val_loss", patience=10),
        LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)),
    ]
    tl.fit(num_epochs=4, callbacks=callbacks, resume_from="latest" if mode == "resume" else None)
    torch.save(
        {
            "params": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "history": tl.train_history.to_dict(),
            "seen": recorder.seen,
            "lr": opt.param_groups[0]["lr"],
            "early_stopping": callbacks[1].state_dict(),
            "experiment_dir": str(tl.experiment_dir),
        },
        out,
    )


if __name__ == "__main__":
    main()
