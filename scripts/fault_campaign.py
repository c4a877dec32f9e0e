"""A randomized fault campaign: N training runs, each killed (SIGKILL or SIGTERM) at random moments, inside steps,
checkpoint commits and uploads alike, with the S3 server (SeaweedFS on loopback) killed and restarted at random in
the cloud runs; every run is resumed until it completes and compared with an uninterrupted run.

It prints how many runs resumed exactly (parameters, optimizer state and history ``torch.equal`` to the uninterrupted
run's), how many steps each kill lost (a SIGKILL loses the steps since the last checkpoint; a SIGTERM none), whether
``latest`` ever named a checkpoint that does not load (locally, or in the bucket when it is up), and whether ranked
retention (``rm_subopt_local_models='val_loss'``, 2 kept, with iteration checkpoints) kept the two best epoch-end
checkpoints, verified, at the end of every run. It exits non-zero if any run is not exact, any ``latest`` is
unloadable, the best two are not kept or a SIGTERM lost a step.

usage: uv run python scripts/fault_campaign.py [--runs 50] [--seed 0] [--s3-every 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPOCHS, N_TRAIN, BATCH, SAVE_EVERY = 3, 160, 8, 2  # 20 steps per epoch, a checkpoint every 2 steps: ~30 commits


# ---------------------------------------------------------------------------------------------------- the child


def child(run_dir: Path) -> None:
    """Train (resuming from ``latest`` when there is one); print ``it N`` after each step; write the result."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from aitoolbox.loop.callbacks import Callback
    from aitoolbox.loop.testing import make_classification_data
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

    class Progress(Callback):
        def on_batch_end(self) -> None:
            print(f"it {self.train_loop_obj.iteration}", flush=True)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 768), nn.ReLU(), nn.Dropout(0.1), nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 3)
    )  # ~600k parameters: commits take a measurable time
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = DataLoader(make_classification_data(N_TRAIN), batch_size=BATCH, shuffle=True)
    val = DataLoader(make_classification_data(40, seed=1), batch_size=20)
    cloud: dict[str, Any] = {}
    if os.environ.get("CAMPAIGN_ENDPOINT"):
        cloud = {
            "cloud_save_mode": "s3",
            "bucket_name": os.environ["CAMPAIGN_BUCKET"],
            "cloud_options": {
                "endpoint_url": os.environ["CAMPAIGN_ENDPOINT"],
                "create_bucket": True,
                "max_attempts": 3,
                "backoff_s": 0.2,
                "flush_timeout_s": 20,
            },
        }
    tl = TrainLoopCheckpoint(
        model,
        train,
        val,
        None,
        opt,
        nn.CrossEntropyLoss(),
        "campaign",
        "run",
        run_dir / "results",
        iteration_save_freq=SAVE_EVERY,
        rm_subopt_local_models="val_loss",
        num_best_checkpoints_kept=2,
        device="cpu",
        progress_bar=False,
        **cloud,
    )
    has_ckpt = _experiment(run_dir) is not None  # an attempt killed before its first commit left only a folder
    tl.fit(num_epochs=EPOCHS, callbacks=[Progress()], resume_from="latest" if has_ckpt else None)
    print("fit-done", flush=True)  # a SIGTERM from here on is not a preemption: the handlers are gone
    torch.save(
        {"params": model.state_dict(), "optimizer": opt.state_dict(), "history": tl.train_history.to_dict()},
        run_dir / "result.pt",
    )


# ---------------------------------------------------------------------------------------------------- the campaign


@dataclass
class Stats:
    runs: int = 0
    exact: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"SIGKILL": 0, "SIGTERM": 0})
    lost: dict[str, list[int]] = field(default_factory=lambda: {"SIGKILL": [], "SIGTERM": []})
    sigterm_codes: dict[str, int] = field(default_factory=dict)
    unloadable: list[str] = field(default_factory=list)
    bucket_bad: list[str] = field(default_factory=list)
    best_kept: int = 0  # runs whose two best epoch-end checkpoints (by val_loss) were kept and verify
    server_kills: int = 0
    in_commit: int = 0  # kills that left a half-written checkpoint (.tmp-*) behind: inside a commit
    uploads_pending: int = 0  # kills (S3 runs) after which the journal still listed uploads
    failures: list[str] = field(default_factory=list)


class Child:
    """A training child process whose ``it N`` lines are read as they come."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.last = -1
        self.fit_done = False
        self.started = threading.Event()
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("it "):
                self.last = int(line.split()[1])
                self.started.set()
            elif line.startswith("fit-done"):
                self.fit_done = True
        self.started.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.05)  # the reader threads drain the pipes
        return code


def _experiment(run_dir: Path) -> Path | None:
    """The experiment folder ``resume_from='latest'`` continues: the newest one with a committed checkpoint."""
    from aitoolbox.checkpointing import CheckpointManager

    folders = sorted((run_dir / "results" / "campaign").glob("run_*")) if (run_dir / "results").exists() else []
    with_ckpt = [e for e in folders if CheckpointManager(e / "checkpoint_model").latest_name() is not None]
    return with_ckpt[-1] if with_ckpt else None


def _latest(run_dir: Path) -> tuple[Any, str | None, Path | None]:
    from aitoolbox.checkpointing import CheckpointManager

    exp = _experiment(run_dir)
    if exp is None:
        return None, None, None
    manager = CheckpointManager(exp / "checkpoint_model")
    return manager, manager.latest_name(), exp


def _check_latest(run_dir: Path, stats: Stats, label: str) -> int:
    """The iteration ``latest`` resumes from (0: none); an unloadable ``latest`` is recorded."""
    manager, name, _ = _latest(run_dir)
    if name is None:
        return 0
    try:
        return int(manager.load(name).info.iteration)
    except Exception as err:  # the invariant under test: never
        stats.unloadable.append(f"{label}: latest={name}: {err}")
        return -1


def _check_best_kept(run_dir: Path, val_loss: list[float], stats: Stats, label: str) -> None:
    """Ranked retention kept the two best epoch-end checkpoints by val_loss, each verified, with its own score."""
    manager, _, _ = _latest(run_dir)
    scored = {i.epoch: i.metrics.get("val_loss") for i in manager.list(verify=True) if "val_loss" in i.metrics}
    best = sorted(range(len(val_loss)), key=lambda e: val_loss[e])[:2]
    missing = [e + 1 for e in best if scored.get(e + 1) != val_loss[e]]
    if missing:
        stats.failures.append(f"{label}: the best checkpoints of epochs {missing} are not kept (kept: {scored})")
    else:
        stats.best_kept += 1


def _check_bucket(store: Any, run_dir: Path, stats: Stats, label: str) -> None:
    """The bucket's ``latest`` names a checkpoint whose files are all there, with the manifest's sizes."""
    _, _, exp = _latest(run_dir)
    if exp is None:
        return
    base = store.key(f"campaign/{exp.name}/checkpoint_model/")
    name = "?"
    try:
        if not store.exists(base + "latest"):
            return
        name = store.read_bytes(base + "latest").decode().strip()
        manifest = json.loads(store.read_bytes(f"{base}{name}/manifest.json"))
        sizes = {o.key.rsplit("/", 1)[1]: o.size for o in store.list(f"{base}{name}/")}
        for part in manifest["parts"].values():
            assert sizes.get(part["file"]) == part["bytes"], f"{part['file']} missing or truncated"
    except Exception as err:
        stats.bucket_bad.append(f"{label}: bucket latest={name}: {err}")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    if a["history"] != b["history"] or a["params"].keys() != b["params"].keys():
        return False
    if not all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"]):
        return False
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[i][n], sb[i][n]) for i in sa for n in sa[i])


@contextlib.contextmanager
def _s3(scratch: Path, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from aitoolbox.cloud.testing import SeaweedServer, aws_environment

    os.environ.update({k: v for k, v in aws_environment(scratch / "aws").items() if v is not None})
    for k, v in aws_environment(scratch / "aws").items():
        if v is None:
            os.environ.pop(k, None)
    with SeaweedServer.serve(scratch / "seaweedfs") as server:
        yield server


def one_run(
    i: int, rng: random.Random, scratch: Path, reference: dict[str, Any], train_s: float, server: Any, stats: Stats
) -> None:
    import torch

    run_dir = scratch / f"run{i:03d}"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_")}
    env["OMP_NUM_THREADS"] = "1"
    store = None
    if server is not None:
        from aitoolbox.cloud import S3Store

        bucket = f"campaign-{uuid.uuid4().hex[:10]}"
        env.update(CAMPAIGN_ENDPOINT=server.endpoint_url, CAMPAIGN_BUCKET=bucket)
        store = S3Store(bucket, endpoint_url=server.endpoint_url)
    at: int | None = 0
    for k in range(rng.choice([1, 1, 2, 3])):
        left = train_s * (1 - max(at or 0, 0) / (EPOCHS * N_TRAIN // BATCH))  # the resumed run trains less
        at = _kill_once(f"run {i} kill {k + 1}", run_dir, env, rng, left, server, store, stats)
        if at is None:
            break
    final = Child(run_dir, env)
    code = final.wait()
    stats.runs += 1
    if code != 0:
        stats.failures.append(f"run {i}: the resumed run failed ({code}): {final.stderr[-3000:]}")
        return
    result = torch.load(run_dir / "result.pt", weights_only=False)
    if _same(result, reference):
        stats.exact += 1
    else:
        stats.failures.append(f"run {i}: NOT equal to the uninterrupted run")
    _check_best_kept(run_dir, result["history"]["val_loss"], stats, f"run {i}")
    if store is not None:
        _check_bucket(store, run_dir, stats, f"run {i} end")


def _kill_once(
    label: str,
    run_dir: Path,
    env: dict[str, str],
    rng: random.Random,
    train_s: float,
    server: Any,
    store: Any,
    stats: Stats,
) -> int | None:
    """Start the run (resuming), kill it at a random moment of its training (``train_s`` long; and maybe the S3
    server before), check ``latest``; the iteration it resumes from, ``None`` when it completed before the kill."""
    proc = Child(run_dir, env)
    if not proc.started.wait(120) or proc.proc.poll() is not None:
        return None  # finished (or failed) before training: the final run reports it
    delay = rng.uniform(0.0, train_s * 1.1)
    killer = None
    if server is not None and rng.random() < 0.5:
        killer = threading.Timer(rng.uniform(0.0, delay), server.kill)
        killer.start()
        stats.server_kills += 1
    time.sleep(delay)
    died = proc.proc.poll()
    if died not in (None, 0):  # it failed on its own before the kill: a failure, not a kill
        proc.wait()
        stats.failures.append(f"{label}: the run failed by itself ({died}): {proc.stderr[-3000:]}")
    how = rng.choice(["SIGKILL", "SIGTERM"])
    proc.proc.send_signal(getattr(signal, how))
    code = proc.wait()
    if killer is not None:
        killer.join()
        server.start()
    stats.kills[how] += 1
    _, _, exp = _latest(run_dir)
    ckpt_dir = exp / "checkpoint_model" if exp is not None else None
    if ckpt_dir is not None and ckpt_dir.is_dir() and any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir()):
        stats.in_commit += 1
    journal = exp / ".cloud_upload_journal.jsonl" if exp is not None else None
    if store is not None and journal is not None and journal.exists():
        records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip().endswith("}")]
        settled = {r["id"] for r in records if r.get("op") in ("done", "drop")}
        stats.uploads_pending += any(r.get("op") == "add" and r["id"] not in settled for r in records)
    resumes_at = _check_latest(run_dir, stats, label)
    if how == "SIGTERM":
        # 143: preempted in training; after fit returned (the result being written), the default action (-15) or a
        # clean exit (0) is right: the rerun finds nothing to train. Anything else is a failure.
        kind = "143 (preempted)" if code == 143 else f"{code} (after fit)" if proc.fit_done else f"{code} (in fit!)"
        stats.sigterm_codes[kind] = stats.sigterm_codes.get(kind, 0) + 1
        if code != 143 and not (proc.fit_done and code in (0, -signal.SIGTERM)):
            stats.failures.append(f"{label}: SIGTERM exit code {code}: {proc.stderr[-2000:]}")
    if code != 0 and resumes_at >= 0 and proc.last >= 0:
        stats.lost[how].append(max(proc.last - resumes_at, 0))
        if proc.last - resumes_at > 2 * SAVE_EVERY:  # more than the commit in flight and the next: say where
            print(f"  {label}: {how} (exit {code}) after step {proc.last}; latest is at {resumes_at}", flush=True)
    if store is not None:
        _check_bucket(store, run_dir, stats, label)
    return resumes_at


def campaign(runs: int, seed: int, s3_every: int, keep: Path | None) -> int:
    import torch

    scratch = Path(tempfile.mkdtemp(prefix="fault-campaign-")) if keep is None else keep
    scratch.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    stats = Stats()
    start = time.monotonic()
    ref_dir = scratch / "reference"
    ref_dir.mkdir()
    t0 = time.monotonic()
    ref = Child(ref_dir, {**os.environ, "OMP_NUM_THREADS": "1"})
    ref.started.wait(120)
    first_step = time.monotonic()
    while not ref.fit_done and ref.proc.poll() is None:
        time.sleep(0.01)
    train_s = max(time.monotonic() - first_step, 0.2)  # first step to the end of fit: where kills aim
    if ref.wait() != 0:
        print(ref.stderr, file=sys.stderr)
        return 2
    reference = torch.load(ref_dir / "result.pt", weights_only=False)
    print(f"reference run: {time.monotonic() - t0:.1f} s ({train_s:.1f} s training, {EPOCHS} epochs)")
    with _s3(scratch, s3_every > 0) as server:
        for i in range(runs):
            use_s3 = server is not None and i % s3_every == s3_every - 1
            one_run(i, rng, scratch, reference, train_s, server if use_s3 else None, stats)
            print(f"run {i + 1}/{runs}: {stats.exact} exact so far", flush=True)
    took = time.monotonic() - start
    kill_lost, term_lost = stats.lost["SIGKILL"], stats.lost["SIGTERM"]
    machine = f"{os.cpu_count()} cores, torch {torch.__version__}"
    print(f"\nfault campaign: {runs} runs, seed {seed}, {took:.0f} s, {machine}")
    print(f"  resumed exactly:         {stats.exact}/{stats.runs}")
    print(
        f"  kills:                   {stats.kills['SIGKILL']} SIGKILL, {stats.kills['SIGTERM']} SIGTERM "
        f"(exit codes: {stats.sigterm_codes}); S3 server killed {stats.server_kills} times"
    )
    if kill_lost:
        print(f"  steps lost per SIGKILL:  mean {statistics.mean(kill_lost):.2f}, max {max(kill_lost)}")
    print(f"  steps lost per SIGTERM:  {sum(term_lost)} in total (max {max(term_lost, default=0)})")
    print(
        f"  kills inside a commit:   {stats.in_commit} (a half-written checkpoint left behind); with uploads "
        f"pending: {stats.uploads_pending}"
    )
    print(f"  unloadable latest:       {len(stats.unloadable)}; bucket latest incomplete: {len(stats.bucket_bad)}")
    print(f"  best 2 kept, verified:   {stats.best_kept}/{stats.runs}")
    for line in stats.failures + stats.unloadable + stats.bucket_bad:
        print("  !", line[:3000])
    if keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    bad = stats.failures or stats.unloadable or stats.bucket_bad or sum(term_lost) or stats.exact != runs
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--s3-every", type=int, default=4, help="every N-th run mirrors to S3 (0: none)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' folders here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0
    return campaign(args.runs, args.seed, args.s3_every, args.keep)


if __name__ == "__main__":
    sys.exit(main())
