"""Jobs of the world-size-change tests: run by ``torchrun`` (2 ranks) or as one plain process.

Every job trains a fresh TrainLoop (TinyClassifier, SGD with momentum, 256 samples, 2 epochs) and writes, per rank,
``<job>-w<world>-r<rank>.pt``: final parameters, the data-order log, the epoch losses, the (epoch, index) of every
sample the dataset served, and what the resume raised or warned. ``*-whole`` jobs also snapshot the run at a global
step inside the second epoch (``<job>-w<world>-snap-r<rank>.pt``: model, optimizer, loop state; no RNG, the model
draws none), as a user's own checkpoint would.

- ``stock-whole`` / ``stock-resume``: ``DataLoader(shuffle=True)`` (sharded by the loop with a DistributedSampler);
  the resume runs in a process seeded differently and calls ``load_state_dict`` before ``fit``.
- ``stock-across`` / ``stock-allowed``: resume the 2-rank stock snapshot here (strict: refused; ``strict=False``:
  accepted with a warning).
- ``el-whole`` / ``el-from-1`` / ``el-from-2``: an ElasticSampler (global batch 32), resumed from the 1- or 2-process
  snapshot; ``--accumulate`` sets the elastic jobs' grad_accumulation (the stock ones use 1).
- ``ckpt-el-cut`` / ``ckpt-el-resume`` and ``ckpt-st-cut`` / ``ckpt-st-resume``: the same through TrainLoopCheckpoint
  (its mid-epoch checkpoint at the cut, ``fit(resume_from=...)``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aitoolbox.loop import ElasticSampler, ResumeMismatchError, TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import TinyClassifier, make_classification_data

N, GLOBAL_BATCH, EPOCHS = 256, 32, 2
SNAP_STEP = 11  # global optimizer steps: the 4th of the second epoch's 8


class Served(Dataset[Any]):
    """The training set, recording (epoch, index) of every sample it serves (num_workers=0: in this process)."""

    def __init__(self) -> None:
        self.data = make_classification_data(N, seed=1)
        self.epoch = 0
        self.served: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        self.served.append((self.epoch, int(i)))
        return self.data[i]


class Probe(Callback):
    """Tells the dataset the epoch; snapshots the run after global step ``at`` (every rank, its own file)."""

    def __init__(self, data: Served, snap: Path | None, at: int) -> None:
        super().__init__("probe")
        self.data, self.snap, self.at = data, snap, at

    def on_epoch_begin(self) -> None:
        self.data.epoch = self.train_loop_obj.epoch

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if tl.batch_in_epoch % tl.grad_accumulation:
            return
        if self.snap is not None and tl.iteration // tl.grad_accumulation == self.at:  # global steps done
            torch.save(
                {
                    "model": copy.deepcopy(tl.model.state_dict()),
                    "optimizer": copy.deepcopy(tl.optimizer.state_dict()),
                    "loop": tl.state_dict(),
                    "served": list(self.data.served),
                },
                self.snap,
            )


def build(elastic: bool) -> tuple[TrainLoop, Served]:
    torch.manual_seed(0)
    data = Served()
    if elastic:
        loader = DataLoader(data, batch_sampler=ElasticSampler(data, global_batch_size=GLOBAL_BATCH, seed=7))
    else:
        loader = DataLoader(data, batch_size=GLOBAL_BATCH // 2, shuffle=True)
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    tl = TrainLoop(model, loader, None, None, optimizer, nn.CrossEntropyLoss(), device="cpu", progress_bar=False)
    return tl, data


def run_checkpointed(job: str, out: Path, args: argparse.Namespace) -> None:
    """``ckpt-{el,st}-{cut,resume}``: TrainLoopCheckpoint, cut by ``fit(num_iterations=...)`` (its mid-epoch
    checkpoint) at global step SNAP_STEP, resumed by ``fit(resume_from=<the experiment folder>)``."""
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    kind, phase = job.split("-")[1:]
    torch.manual_seed(0)
    data = Served()
    if kind == "el":
        sampler = ElasticSampler(data, global_batch_size=GLOBAL_BATCH, seed=7, log_every=2)
        loader = DataLoader(data, batch_sampler=sampler)
    else:
        loader = DataLoader(data, batch_size=GLOBAL_BATCH // 2, shuffle=True)
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    tl = TrainLoopCheckpoint(
        model,
        loader,
        None,
        None,
        optimizer,
        nn.CrossEntropyLoss(),
        "elastic",
        kind,
        out / "results",
        {},
        device="cpu",
        progress_bar=False,
    )
    accumulate = args.accumulate if kind == "el" else 1
    pointer = out / f"{job[: -len(phase)]}folder.txt"
    result: dict[str, Any] = {"error": None}
    if phase == "cut":
        tl.fit(num_iterations=SNAP_STEP * accumulate, grad_accumulation=accumulate)
        if rank == 0:
            pointer.write_text(str(tl.experiment_dir))
    else:
        try:
            tl.fit(num_epochs=EPOCHS, grad_accumulation=accumulate, resume_from=pointer.read_text())
        except ResumeMismatchError as err:
            result["error"] = str(err)
    result.update(
        params={k: v.detach().clone() for k, v in tl.model.state_dict().items()},
        order=tl.state.order_log.state_dict(),
        folder=str(tl.experiment_dir),
    )
    torch.save(result, out / f"{job}-w{world}-r{rank}.pt")


def run(job: str, out: Path, args: argparse.Namespace) -> None:
    if job.startswith("ckpt-"):
        run_checkpointed(job, out, args)
        return
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    elastic = job.startswith("el-")
    tl, data = build(elastic)
    snap = out / f"{job}-w{world}-snap-r{rank}.pt" if job.endswith("whole") else None
    probe = Probe(data, snap, SNAP_STEP)
    result: dict[str, Any] = {"error": None, "warnings": []}
    if not job.endswith("whole"):
        source = {"stock-resume": f"stock-whole-w{world}"}.get(job, "stock-whole-w2" if job.startswith("st") else None)
        source = source or f"el-whole-w{job[-1]}"
        saved = torch.load(out / f"{source}-snap-r{min(rank, int(source[-1]) - 1)}.pt", weights_only=False)
        torch.manual_seed(1000 + rank)  # a process seeded differently from the saved run
        tl.model.load_state_dict(saved["model"])
        tl.optimizer.load_state_dict(saved["optimizer"])
        tl.load_state_dict(saved["loop"], strict=job != "stock-allowed")
        result["served_before"] = saved["served"]
    handler = _Collect()
    logging.getLogger("aitoolbox").addHandler(handler)
    try:
        tl.fit(num_epochs=EPOCHS, grad_accumulation=args.accumulate if elastic else 1, callbacks=[probe])
    except ResumeMismatchError as err:
        result["error"] = str(err)
    result.update(
        params={k: v.detach().clone() for k, v in tl.model.state_dict().items()},
        order=tl.state.order_log.state_dict(),
        loss=list(tl.train_history["loss"]),
        served=data.served,
        warnings=handler.messages,
    )
    torch.save(result, out / f"{job}-w{world}-r{rank}.pt")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args()
    for job in args.jobs.split(","):
        run(job, args.out, args)


if __name__ == "__main__":
    main()
