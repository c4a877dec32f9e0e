"""The FSDP2 tests' worker: under ``torchrun`` it runs a list of jobs in one launch (one process group), each a new
TrainLoop; as a plain ``python`` process (``--plain``) it loads a sharded checkpoint into one process.

Jobs (``--jobs``, comma separated):
- ``ddp``: ``TrainLoopCheckpoint(strategy='ddp')``, the reference; ``ddp-accum``/``fsdp2-accum``: plain
  ``TrainLoop``s with ``grad_accumulation=2`` and gradient-norm clipping, under each strategy; ``fsdp2-bf16``:
  the latter with ``use_amp='bf16'``;
- ``fsdp2``: ``TrainLoopCheckpointEndSave(strategy='fsdp2', iteration_save_freq=5)``: sharded checkpoints at
  iterations 5, 10, 15... and every epoch end; the whole model and optimizer state are recorded at each epoch end;
- ``resume-epoch``/``resume-mid``: a copy of the fsdp2 job's folder resumed from its second epoch end, or iteration-5
  (mid-epoch), checkpoint, to the same end; ``ddp-resume``: the second epoch end's checkpoint resumed by DDP;
  ``load-other-world``: that checkpoint loaded into FSDP2 on this launch's world size (nothing left to train);
  ``fsdp2-from-ddp``: the ddp job's second-epoch-end checkpoint (plain layout) resumed by FSDP2;
- ``kill-<stage>``: a sharded run whose second checkpoint commit SIGKILLs the whole job (torchrun included) at
  ``stage``: ``shards`` (the shards written and hashed), ``manifest`` (before it), ``rename``, ``latest``;
- ``preempt``: the fsdp2 job, SIGTERM to rank 1 after iteration 12 (every rank stops at the next step, commits a
  sharded checkpoint and exits 143); ``resume-preempted``: that experiment resumed to the end;
- ``cloud``/``cloud-resume``: the fsdp2 job mirrored to S3 (``AITB_TEST_BUCKET``, ``AITB_TEST_ENDPOINT``) for 2
  epochs, then resumed to 3 from ``latest``; with ``--private-rank1``, rank 1 sees its own empty ``results/`` (a
  private tmpfs in a mount namespace: another machine without a shared folder);
- ``errors``: bad input, each refused early: writes ``errors.json`` (rank 0), what each attempt raised.
Each job writes ``<job>.pt`` (rank 0): the whole final model and optimizer state, the history and what it recorded.
``--device cuda --amp bf16`` runs them on GPUs (tests/test_fsdp_gpu.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop.callbacks import Callback, GradNormClip
from aitoolbox.loop.model import ModelWrap
from aitoolbox.loop.preemption import Preempted
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import TrainLoop, TrainLoopCheckpoint, TrainLoopCheckpointEndSave

N_TRAIN, N_VAL, PER_RANK_BATCH, EPOCHS = 256, 45, 16, 3
DEVICE, AMP = "cpu", False  # set from --device, --amp


class Record(Callback):
    """At each epoch end: the whole model and optimizer state (a collective under FSDP2; rank 0 keeps them)."""

    def __init__(self) -> None:
        super().__init__("record", execution_order=20_000)
        self.epochs: dict[int, dict[str, Any]] = {}

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        model = tl.strategy.model_state_dict(tl.model)
        optimizer = tl.strategy.optimizer_state_dict(tl.model, tl.optimizers[0])
        if tl.is_main_process:  # copies: a state dict may share tensors (Adam's step) with the optimizer
            self.epochs[tl.epoch] = copy.deepcopy({"model": model, "optimizer": optimizer})


def build(
    out: Path,
    strategy: Any,
    experiment: str,
    variant: type[TrainLoop] = TrainLoopCheckpoint,
    *,
    hidden: int = 16,
    model: nn.Module | None = None,
    amp: Any = None,
    cloud: bool = False,
    compile: Any = None,  # TrainLoop's option
) -> TrainLoop:
    torch.manual_seed(0)
    train = DataLoader(make_classification_data(N_TRAIN, seed=1), batch_size=PER_RANK_BATCH, shuffle=True)
    val = DataLoader(make_classification_data(N_VAL, seed=2), batch_size=10)
    model = TinyClassifier(dropout=0.1, hidden=hidden) if model is None else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    if variant is TrainLoop:
        return TrainLoop(
            model,
            train,
            val,
            None,
            optimizer,
            nn.CrossEntropyLoss(),
            device=DEVICE,
            use_amp=amp or AMP,
            strategy=strategy,
            compile=compile,
        )
    extra: dict[str, Any] = {}
    if variant is TrainLoopCheckpointEndSave:
        extra["val_result_package"] = ClassificationResultPackage()
    if cloud:
        extra["cloud_save_mode"] = "s3"
        extra["bucket_name"] = os.environ["AITB_TEST_BUCKET"]
        extra["cloud_options"] = {"endpoint_url": os.environ["AITB_TEST_ENDPOINT"], "create_bucket": True}
    return variant(
        model,
        train,
        val,
        None,
        optimizer,
        nn.CrossEntropyLoss(),
        "fsdp",
        experiment,
        out / "results",
        {"lr": 1e-2},
        device=DEVICE,
        use_amp=AMP,
        strategy=strategy,
        iteration_save_freq=5,
        compile=compile,
        **extra,
    )


def _save(tl: TrainLoop, out: Path, job: str, record: Record | None = None) -> None:
    model = tl.strategy.model_state_dict(tl.model)
    optimizer = tl.strategy.optimizer_state_dict(tl.model, tl.optimizers[0])
    if tl.is_main_process:
        torch.save(
            {
                "model": model,
                "optimizer": optimizer,
                "history": tl.train_history.to_dict(),
                "epochs": record.epochs if record is not None else {},
                "experiment_dir": str(getattr(tl, "experiment_dir", "")),
                "y_pred": torch.as_tensor(tl.predict_on_validation_set()[0]),
                "param_dtype": str(getattr(tl.strategy.mixed_precision(), "param_dtype", None))
                if job == "fsdp2-bf16"
                else "",
            },
            out / f"{job}.pt",
        )
    else:
        tl.predict_on_validation_set()  # a collective pass: every rank takes part
    torch.distributed.barrier()  # the next job may read what rank 0 wrote


def _kill_at(stage: str) -> None:
    """Make rank 0's second checkpoint commit SIGKILL the job at ``stage``."""
    import aitoolbox.checkpointing._sharded_commit as sharded_module
    import aitoolbox.checkpointing.layout as layout_module
    import aitoolbox.checkpointing.manager as manager_module

    seen = {"commits": 0}

    def die() -> None:
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def second() -> bool:
        return seen["commits"] >= 1

    finish, write, rename = sharded_module.finish_shards, manager_module.atomic_write_bytes, os.rename

    def finish_shards(*args: Any) -> Any:
        result = finish(*args)
        if stage == "shards" and second():
            die()
        return result

    def atomic_write_bytes(path: Path, data: bytes) -> None:
        at = {"manifest": "manifest.json", "latest": "latest"}.get(stage)
        if second() and path.name == at:
            die()
        write(path, data)
        if path.name == "latest":
            seen["commits"] += 1

    def os_rename(src: Any, dst: Any) -> None:
        if stage == "rename" and second() and Path(src).name.startswith(".tmp-"):
            die()
        rename(src, dst)

    sharded_module.finish_shards = finish_shards  # type: ignore[assignment]
    layout_module.atomic_write_bytes = atomic_write_bytes  # type: ignore[assignment]  # the manifest
    manager_module.atomic_write_bytes = atomic_write_bytes  # type: ignore[assignment]  # the pointer
    os.rename = os_rename  # type: ignore[assignment]


def _train(job: str, out: Path) -> None:
    """ddp, fsdp2, ddp-accum, fsdp2-accum, resume-preempted."""
    if job == "fsdp2":
        tl, record = build(out, "fsdp2", "fsdp2", TrainLoopCheckpointEndSave), Record()
        tl.fit(num_epochs=EPOCHS, callbacks=[record])
        _save(tl, out, job, record)
    elif job.endswith("-accum") or job == "fsdp2-bf16":
        tl = build(out, job.split("-")[0], job, TrainLoop, amp="bf16" if job.endswith("bf16") else AMP)
        tl.fit(num_epochs=2, grad_accumulation=2, callbacks=[GradNormClip(0.05)])
        _save(tl, out, job)
    elif job.startswith("cloud"):
        tl = build(out, "fsdp2", "cloud", cloud=True)
        resume = {"resume_from": "latest"} if job == "cloud-resume" else {}
        tl.fit(num_epochs=EPOCHS if resume else EPOCHS - 1, **resume)
        _save(tl, out, job)
    elif job.endswith("-compile"):  # torch.compile in place, after the strategy wrapped (aot_eager: no C compiler)
        tl = build(out, job.split("-")[0], job, compile={"backend": "aot_eager", "loss": True, "optimizer": True})
        tl.fit(num_epochs=EPOCHS)
        _save(tl, out, job)
    elif job == "resume-preempted":
        tl = build(out, "fsdp2", "preempted")
        tl.fit(num_epochs=EPOCHS, resume_from="latest")
        _save(tl, out, job)
    else:
        tl = build(out, "ddp", "ddp")
        tl.fit(num_epochs=EPOCHS)
        _save(tl, out, job)


def _preempt(job: str, out: Path) -> None:
    class Sigterm(Callback):
        def on_batch_end(self) -> None:
            if self.train_loop_obj.iteration == 12 and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGTERM)

    tl = build(out, "fsdp2", "preempted")
    try:
        tl.fit(num_epochs=EPOCHS, callbacks=[Sigterm()])
    except Preempted as err:
        if os.environ["RANK"] == "0":
            (out / "preempted.json").write_text(json.dumps({"iteration": err.iteration, "code": err.code}))
        raise


def _resume(job: str, out: Path) -> None:
    source_job = "ddp" if job == "fsdp2-from-ddp" else "fsdp2"
    source = Path(torch.load(out / f"{source_job}.pt", weights_only=False)["experiment_dir"])
    copy = out / "results" / "fsdp" / f"{job}_copy"
    done = out / f"{job}.copied"
    if os.environ["RANK"] == "0":  # the process group may not exist yet: the first fit makes it
        shutil.copytree(source, copy)
        done.touch()
    while not done.exists():
        time.sleep(0.05)
    name = "ckpt-e0000-i000000005" if job == "resume-mid" else "ckpt-e0002-i000000016"
    tl = build(out, "ddp" if job == "ddp-resume" else "fsdp2", job)  # fsdp2-from-ddp: a plain checkpoint
    tl.fit(num_epochs=2 if job == "load-other-world" else EPOCHS, resume_from=copy / "checkpoint_model" / name)
    _save(tl, out, job)


def _kill(job: str, out: Path) -> None:
    _kill_at(job[len("kill-") :])
    build(out, "fsdp2", job).fit(num_epochs=EPOCHS)
    raise AssertionError(f"{job}: the job was not killed")


def run_job(job: str, out: Path) -> None:
    train = ("ddp", "fsdp2", "ddp-accum", "fsdp2-accum", "fsdp2-bf16", "resume-preempted", "cloud", "cloud-resume")
    train += ("ddp-compile", "fsdp2-compile")
    jobs = {**dict.fromkeys(train, _train), "preempt": _preempt}
    resumes = ("resume-epoch", "resume-mid", "ddp-resume", "load-other-world", "fsdp2-from-ddp")
    jobs.update(dict.fromkeys(resumes, _resume))
    jobs["errors"] = lambda _, out: errors(out)
    run = _kill if job.startswith("kill-") else jobs.get(job)
    if run is None:
        raise SystemExit(f"unknown job {job!r}")
    run(job, out)


def errors(out: Path) -> None:
    """Each bad input raised before training, its message recorded (rank 0)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    found: dict[str, str] = {}

    def attempt(name: str, make: Any) -> None:
        try:
            make()
        except Exception as err:
            found[name] = f"{type(err).__name__}: {err}"

    dist.barrier() if dist.is_initialized() else None
    wrapped = DistributedDataParallel(TinyClassifier()) if dist.is_initialized() else None
    attempt("ddp-wrapped", lambda: build(out, "fsdp2", "bad", TrainLoop, model=ModelWrap(wrapped)).fit(num_epochs=1))
    sharded = TinyClassifier()
    fully_shard(sharded.net)
    attempt("sharded-under-ddp", lambda: build(out, "ddp", "bad", TrainLoop, model=sharded).fit(num_epochs=1))
    source = Path(torch.load(out / "fsdp2.pt", weights_only=False)["experiment_dir"]) / "checkpoint_model"
    attempt(
        "other-shape",
        lambda: build(out, "fsdp2", "bad", hidden=32).fit(num_epochs=3, resume_from=source / "ckpt-e0002-i000000016"),
    )
    if os.environ["RANK"] == "0":
        (out / "errors.json").write_text(json.dumps(found, indent=1))


def private_results(out: Path) -> None:
    """Give this process its own empty ``out/results`` (a tmpfs in a mount namespace of its own): a machine that
    shares no folder with rank 0. Exits saying so when the system does not allow it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 1 << 18
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    if (
        libc.unshare(clone_newns) != 0
        or libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0
        or libc.mount(b"tmpfs", str(folder).encode(), b"tmpfs", 0, None) != 0
    ):
        raise SystemExit(f"cannot make a private mount: {os.strerror(ctypes.get_errno())}")


def plain(out: Path, checkpoint: Path, epochs: int) -> None:
    """One process, no process group: resume (nothing left to train) from a sharded checkpoint, then load it."""
    from aitoolbox.checkpointing import CheckpointManager

    tl = build(out, "single", "plain")
    tl.fit(num_epochs=epochs, resume_from=checkpoint)
    loaded = CheckpointManager(checkpoint.parent).load(checkpoint.name)
    torch.save(
        {
            "model": tl.model.state_dict(),
            "optimizer": tl.optimizers[0].state_dict(),
            "loaded_model": loaded["model"],
            "epoch": tl.epoch,
            "iteration": tl.iteration,
        },
        out / "plain.pt",
    )
    tl.fit(num_epochs=epochs + 1, resume_from=checkpoint)  # and it trains on, in one process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", default="")
    parser.add_argument("--plain", type=Path, default=None, help="a sharded checkpoint to resume in one process")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="", help="use_amp, e.g. bf16")
    parser.add_argument("--private-rank1", action="store_true", help="rank 1 shares no folder with rank 0")
    args = parser.parse_args()
    global DEVICE, AMP
    DEVICE, AMP = args.device, args.amp or False
    if args.private_rank1 and os.environ.get("RANK") == "1":
        private_results(args.out)
    if args.plain is not None:
        plain(args.out, args.plain, args.epochs)
        return
    for job in args.jobs.split(","):
        run_job(job, args.out)


if __name__ == "__main__":
    sys.exit(main())
