"""One rank of the distributed tests, started by ``torchrun`` (or, with ``--spawn N``, a plain process whose
``TrainLoop(gpu_mode='ddp')`` starts the workers itself).

Trains a small classifier with one of the four variants on CPU/gloo and writes, per rank, what the tests compare:
``rank<R>.pt`` (parameters, history, gathered validation predictions, experiment folder). Fault injection:
``--crash-after-epoch E`` SIGKILLs the whole job (torchrun included) once epoch E's checkpoint is committed,
``--crash-at-iteration N`` after iteration N (with ``--save-every K``, the iteration checkpoints before it stay);
``--raise-on-rank R`` raises in rank R at the start of epoch 1. Preemption: ``--preempt-rank R --preempt-at-iteration
N`` sends SIGTERM to rank R after iteration N; ``--preempt-rank -1``: rank 0 writes ``OUT/paused`` there and waits
for ``OUT/go`` (the test signals torchrun meanwhile). A preempted rank writes ``preempted<R>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.preemption import Preempted
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import (
    TrainLoop,
    TrainLoopCheckpoint,
    TrainLoopCheckpointEndSave,
    TrainLoopEndSave,
)

N_TRAIN, N_VAL, PER_RANK_BATCH = 256, 101, 16


class _Crash(Callback):
    """SIGKILLs the whole process group (the launcher and every rank) after epoch ``epoch``'s checkpoint commits,
    or after iteration ``iteration``."""

    def __init__(self, epoch: int | None, iteration: int | None = None) -> None:
        super().__init__("crash", execution_order=20_000)  # after the checkpoint callback
        self.epoch, self.iteration = epoch, iteration

    def on_epoch_end(self) -> None:
        if self.train_loop_obj.epoch == self.epoch:
            self._die()

    def on_batch_end(self) -> None:
        if self.train_loop_obj.iteration == self.iteration:
            self._die()

    def _die(self) -> None:
        tl = self.train_loop_obj
        if tl.is_main_process:
            tl.checkpoint_manager.wait()
            os.killpg(os.getpgid(0), signal.SIGKILL)
        else:
            signal.pause()  # rank 0 kills us


class _Raise(Callback):
    def __init__(self, rank: int) -> None:
        super().__init__("raise")
        self.rank = rank

    def on_epoch_begin(self) -> None:
        if self.train_loop_obj.epoch == 1 and int(os.environ.get("RANK", "-1")) == self.rank:
            raise RuntimeError(f"injected failure on rank {self.rank}")


class _StopOnRank(Callback):
    """Stops training on one rank only, mid-epoch (as TerminateOnNaN would on a rank-local NaN)."""

    def __init__(self, rank: int, iteration: int) -> None:
        super().__init__("stop")
        self.rank, self.iteration = rank, iteration

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if int(os.environ.get("RANK", "-1")) == self.rank and tl.iteration == self.iteration:
            tl.early_stop = True
            tl.stop_reason = f"stopped by rank {self.rank}"


class _Preempt(Callback):
    """SIGTERM to rank ``rank`` after iteration ``iteration``; rank -1: rank 0 pauses there until OUT/go exists."""

    def __init__(self, rank: int, iteration: int, out: Path, epoch: int | None = None) -> None:
        super().__init__("preempt")
        self.rank, self.iteration, self.out, self.epoch = rank, iteration, out, epoch

    def on_epoch_end(self) -> None:  # --preempt-at-epoch-end E: SIGTERM to rank R in epoch E's end work
        if self.epoch == self.train_loop_obj.epoch and self.rank == int(os.environ.get("RANK", "-1")):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_batch_end(self) -> None:
        me = int(os.environ.get("RANK", "-1"))
        if self.train_loop_obj.iteration != self.iteration or self.epoch is not None:
            return
        if self.rank == me:
            os.kill(os.getpid(), signal.SIGTERM)
        elif self.rank == -1 and me == 0:
            (self.out / "paused").touch()
            while not (self.out / "go").exists():
                time.sleep(0.02)


class _SetEpoch(Callback):
    """For the single-process reference: the epoch-seeded shuffling a distributed run gets from set_epoch."""

    def on_epoch_begin(self) -> None:
        self.train_loop_obj.train_loader.sampler.set_epoch(self.train_loop_obj.epoch)


def build(args: argparse.Namespace) -> TrainLoop:
    torch.manual_seed(0)
    train = make_classification_data(N_TRAIN, seed=1)
    val = make_classification_data(N_VAL, seed=2)
    if args.reference:  # one process, the same global batches: the DistributedSampler of a 1-process world
        sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=0)
        train_loader = DataLoader(train, batch_size=PER_RANK_BATCH * args.world, sampler=sampler)
    else:
        train_loader = DataLoader(train, batch_size=PER_RANK_BATCH, shuffle=True, num_workers=args.workers)
    val_loader = DataLoader(val, batch_size=10)
    model = TinyClassifier(dropout=args.dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    common = (model, train_loader, val_loader, None, optimizer, nn.CrossEntropyLoss())
    options = {"device": "cpu", "gpu_mode": "ddp" if args.spawn else "single", "num_processes": args.spawn or None}
    tracked = {
        "project_name": "ddp",
        "experiment_name": args.variant,
        "local_model_result_folder_path": args.out / "results",
        "hyperparams": {"lr": 0.2},
    }
    if args.variant == "plain":
        return TrainLoop(*common, **options)
    if args.save_every:
        options["iteration_save_freq"] = args.save_every
    if args.variant == "checkpoint":
        return TrainLoopCheckpoint(*common, **tracked, **options)
    package = ClassificationResultPackage()
    if args.variant == "endsave":
        return TrainLoopEndSave(*common, **tracked, val_result_package=package, **options)
    return TrainLoopCheckpointEndSave(*common, **tracked, val_result_package=package, **options)


def _report_group_destroyed(out: Path) -> None:
    """Registered before the loop's own exit handler, so it runs after it (atexit is last-in, first-out)."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank = os.environ.get("RANK", "x")
    # DDP wrappers still alive now would hold the process group into interpreter finalisation
    wrappers = sum(1 for o in gc.get_objects() if isinstance(o, DistributedDataParallel))
    (out / f"destroyed{rank}.txt").write_text(f"{not dist.is_initialized()} ddp_alive={wrappers}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["plain", "checkpoint", "endsave", "checkpoint_endsave"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--crash-after-epoch", type=int, default=None)
    parser.add_argument("--crash-at-iteration", type=int, default=None)
    parser.add_argument("--save-every", type=int, default=0, help="iteration_save_freq of the checkpoint variants")
    parser.add_argument("--raise-on-rank", type=int, default=None)
    parser.add_argument("--stop-on-rank", type=int, default=None)
    parser.add_argument("--stop-at-iteration", type=int, default=5)
    parser.add_argument("--preempt-rank", type=int, default=None, help="-1: the test signals torchrun")
    parser.add_argument("--preempt-at-iteration", type=int, default=12)
    parser.add_argument("--preempt-at-epoch-end", type=int, default=None)
    parser.add_argument("--reference", action="store_true", help="single process, global batch of --world ranks")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--spawn", type=int, default=0, help="gpu_mode='ddp' from this plain process, N workers")
    parser.add_argument("--accumulate", type=int, default=1, help="fit(grad_accumulation=...)")
    parser.add_argument("--debug-log", action="store_true", help="the epoch engine's DEBUG lines on stderr")
    args = parser.parse_args()
    if args.debug_log:
        import logging

        logging.basicConfig()
        logging.getLogger("aitoolbox.loop._epoch").setLevel(logging.DEBUG)
    if "RANK" in os.environ:
        import atexit

        atexit.register(_report_group_destroyed, args.out)
    tl = build(args)
    callbacks: list[Callback] = []
    if args.crash_after_epoch is not None or args.crash_at_iteration is not None:
        callbacks.append(_Crash(args.crash_after_epoch, args.crash_at_iteration))
    if args.raise_on_rank is not None:
        callbacks.append(_Raise(args.raise_on_rank))
    if args.stop_on_rank is not None:
        callbacks.append(_StopOnRank(args.stop_on_rank, args.stop_at_iteration))
    if args.reference:
        callbacks.append(_SetEpoch())
    if args.preempt_rank is not None:
        callbacks.append(_Preempt(args.preempt_rank, args.preempt_at_iteration, args.out, args.preempt_at_epoch_end))
    fit_args: dict[str, object] = {"resume_from": "latest"} if args.resume else {}
    try:
        tl.fit(num_epochs=args.epochs, callbacks=callbacks, grad_accumulation=args.accumulate, **fit_args)
    except Preempted as err:
        record = {"iteration": err.iteration, "signal": err.signal, "checkpoint": str(err.checkpoint), "code": err.code}
        (args.out / f"preempted{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))
        raise
    y_pred, y_true, _ = tl.predict_on_validation_set()
    train_loss = tl.evaluate_loss_on_train_set()
    _, train_true, _ = tl.predict_on_train_set()
    rank = tl.distributed.rank if tl.distributed is not None else 0
    torch.save(
        {
            "params": {k: v.detach().clone() for k, v in tl.model.state_dict().items()},
            "optimizer": tl.optimizer.state_dict(),
            "history": tl.train_history.to_dict(),
            "y_pred": torch.as_tensor(y_pred),
            "y_true": torch.as_tensor(y_true),
            "train_loss": train_loss,
            "train_true": torch.as_tensor(train_true),
            "experiment_dir": str(getattr(tl, "experiment_dir", None)),
            "results": getattr(tl, "results", None),
            "world_size": tl.distributed.world_size if tl.distributed is not None else 1,
            "epoch": tl.epoch,
            "iteration": tl.iteration,
            "stop_reason": tl.stop_reason,
        },
        args.out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    sys.exit(main())
