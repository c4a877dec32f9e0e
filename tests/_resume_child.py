"""Child process for the exact-resume tests: trains, optionally SIGKILLs itself, or resumes; writes what it saw.

usage: _resume_child.py ROOT OUT MODE [KILL_AT] [WORKERS] [CONFIG]
  MODE straight: 4 epochs.   crash: 4 epochs, SIGKILL at KILL_AT ("epoch:N" or "iter:N").   resume: resume 'latest'.
  CONFIG (what shapes the run's randomness; default "global"):
    global        shuffle=True, torch's global RNG
    loader-gen    DataLoader(shuffle=True, generator=torch.Generator().manual_seed(7))
    sampler-gen   DataLoader(sampler=RandomSampler(ds, generator=...))
    weighted      DataLoader(sampler=WeightedRandomSampler(weights, 120, generator=...))
    augment       random noise added inside the dataset's __getitem__ (in the workers when WORKERS > 0)
    accum3        fit(grad_accumulation=3)
    bf16          TrainLoop(use_amp="bf16") on the CPU
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

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


class Augmented(Dataset):
    """Random augmentation inside the dataset: Gaussian noise from torch's RNG (the worker's, with workers)."""

    def __init__(self, n: int) -> None:
        self.inner = make_classification_data(n)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.inner[i]
        return x + 0.1 * torch.randn_like(x), y


def make_train_loader(config: str, workers: int) -> DataLoader:
    data = Augmented(120) if config == "augment" else make_classification_data(120)
    kwargs: dict = {"batch_size": 8, "num_workers": workers}
    gen = torch.Generator().manual_seed(7)  # the same seed in every process: the interrupted run's own generator
    if config == "loader-gen":
        return DataLoader(data, shuffle=True, generator=gen, **kwargs)
    if config == "sampler-gen":
        return DataLoader(data, sampler=RandomSampler(data, generator=gen), **kwargs)
    if config == "weighted":
        weights = torch.linspace(0.2, 1.0, len(data))
        return DataLoader(data, sampler=WeightedRandomSampler(weights, len(data), generator=gen), **kwargs)
    return DataLoader(data, shuffle=True, **kwargs)


def main() -> None:
    root, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_at = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    config = sys.argv[6] if len(sys.argv) > 6 else "global"
    torch.manual_seed(0 if mode != "resume" else 4321)  # a resumed process starts from a different RNG state
    model = TinyClassifier(dropout=0.2)
    train = make_train_loader(config, workers)
    val = DataLoader(make_classification_data(40, seed=1), batch_size=16)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    tl = TrainLoopCheckpoint(
        model, train, val, None, opt, nn.CrossEntropyLoss(),
        project_name="proj", experiment_name="exact", local_model_result_folder_path=root,
        hyperparams={"lr": 1e-2}, iteration_save_freq=5, device="cpu",
        use_amp="bf16" if config == "bf16" else False,
    )  # fmt: skip
    recorder = Recorder(kill_at if mode == "crash" else None)
    callbacks = [
        recorder,
        EarlyStopping(monitor="val_loss", patience=10),
        LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)),
    ]
    tl.fit(
        num_epochs=4,
        callbacks=callbacks,
        grad_accumulation=3 if config == "accum3" else 1,
        resume_from="latest" if mode == "resume" else None,
    )
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
