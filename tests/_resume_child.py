"""Child process for the exact-resume tests: trains, optionally SIGKILLs itself, or resumes; writes what it saw.

usage: _resume_child.py ROOT OUT MODE [KILL_AT] [WORKERS] [CONFIG]
  MODE straight: 4 epochs.   crash: 4 epochs, SIGKILL at KILL_AT ("epoch:N" or "iter:N").   resume: resume 'latest'.
       auto: resume_from='auto' (the same command on a first launch and on every requeue).
       preempt: 4 epochs, a preemption signal at KILL_AT (the process exits with the Preempted code):
         iter:N / epoch:N    SIGTERM to itself after iteration N / as epoch N begins
         twice:N, int:N      two SIGTERMs / a SIGINT after iteration N
         group:N             SIGTERM to its whole process group (DataLoader workers included)
         eval:N              SIGTERM from the validation dataset, inside epoch N's evaluation
         ckpt:N              SIGTERM from the checkpoint writer, inside the commit of iteration N's checkpoint
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
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from aitoolbox.loop.callbacks import Callback, EarlyStopping, LRSchedulerCallback
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

EVAL_ARMED = [False]  # the validation dataset sends SIGTERM once when armed (eval:N)


class Recorder(Callback):
    """Records (iteration, fingerprint of the batch's loss) and kills or signals the process at the requested point."""

    def __init__(self, kill_at: str | None, preempt: bool = False) -> None:
        super().__init__("recorder")
        self.kill_at = kill_at
        self.preempt = preempt
        self.seen: list[tuple[int, float]] = []

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        self.seen.append((tl.iteration, tl.last_loss.item()))
        if self.kill_at == f"iter:{tl.iteration}":
            self._die()
        pause = os.environ.get("AITB_TEST_PAUSE_AT")  # "N:DIR": after iteration N, wait until DIR/go exists
        if pause and int(pause.split(":", 1)[0]) == tl.iteration:
            folder = Path(pause.split(":", 1)[1])
            (folder / "paused").touch()
            while not (folder / "go").exists():
                time.sleep(0.05)
        for kind in ("twice", "int", "group"):
            if self.kill_at == f"{kind}:{tl.iteration}":
                _signal(kind)

    def on_epoch_begin(self) -> None:
        epoch = self.train_loop_obj.epoch
        if self.kill_at == f"epoch:{epoch}":
            self._die()
        EVAL_ARMED[0] = self.kill_at == f"eval:{epoch}"

    def _die(self) -> None:
        if self.preempt:
            os.kill(os.getpid(), signal.SIGTERM)  # recorded; the loop stops at the next optimizer-step boundary
            return
        self.train_loop_obj.checkpoint_manager.wait()  # what was committed is on disk; the rest is lost
        os.kill(os.getpid(), signal.SIGKILL)


def _signal(kind: str) -> None:
    if kind == "group":  # from another process, as a shell or SLURM would: kill -TERM -<pgid>
        subprocess.run(["kill", "-s", "TERM", "--", f"-{os.getpgid(0)}"], check=False)
    elif kind == "int":
        os.kill(os.getpid(), signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)


class SignalingData(Dataset):
    """The validation data; sends SIGTERM at its first item while ``EVAL_ARMED``."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> object:
        if EVAL_ARMED[0]:
            EVAL_ARMED[0] = False
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner[i]


def signal_inside_commit(iteration: int) -> None:
    """Delay the writing of iteration ``iteration``'s checkpoint and send SIGTERM from inside it (a commit in
    progress when the signal comes)."""
    from aitoolbox.checkpointing import manager

    real = manager.write_parts

    def write_parts(tmp, snapshot):  # type: ignore[no-untyped-def]
        if f"-i{iteration:09d}-" in tmp.name:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        return real(tmp, snapshot)

    manager.write_parts = write_parts


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


def cloud_options() -> dict:
    """S3 (SeaweedFS) when the test gives an endpoint and a bucket in AITB_TEST_ENDPOINT / AITB_TEST_BUCKET."""
    endpoint = os.environ.get("AITB_TEST_ENDPOINT")
    if not endpoint:
        return {}
    return {
        "cloud_save_mode": "s3",
        "bucket_name": os.environ["AITB_TEST_BUCKET"],
        "cloud_options": {
            "endpoint_url": endpoint,
            "create_bucket": True,
            "backoff_s": 0.1,
            "max_attempts": int(os.environ.get("AITB_TEST_ATTEMPTS", "2")),
        },
    }


def main() -> None:
    root, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_at = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    config = sys.argv[6] if len(sys.argv) > 6 else "global"
    torch.manual_seed(0 if mode != "resume" else 4321)  # a resumed process starts from a different RNG state
    model = TinyClassifier(dropout=0.2)
    train = make_train_loader(config, workers)
    val = DataLoader(SignalingData(make_classification_data(40, seed=1)), batch_size=16)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    tl = TrainLoopCheckpoint(
        model,
        train,
        val,
        None,
        opt,
        nn.CrossEntropyLoss(),
        project_name="proj",
        experiment_name="exact",
        local_model_result_folder_path=root,
        hyperparams={"lr": 1e-2},
        iteration_save_freq=5,
        device="cpu",
        use_amp="bf16" if config == "bf16" else False,
        **cloud_options(),
    )
    if mode == "preempt" and kill_at and kill_at.startswith("ckpt:"):
        signal_inside_commit(int(kill_at.split(":")[1]))
    recorder = Recorder(kill_at if mode in ("crash", "preempt") else None, preempt=mode == "preempt")
    callbacks = [
        recorder,
        EarlyStopping(monitor="val_loss", patience=10),
        LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)),
    ]
    tl.fit(
        num_epochs=4,
        callbacks=callbacks,
        grad_accumulation=3 if config == "accum3" else 1,
        resume_from={"resume": "latest", "auto": "auto"}.get(mode),
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
