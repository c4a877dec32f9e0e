"""Distributed data parallel training with real processes: ``torchrun --nproc_per_node=2`` on CPU (gloo).

Every variant trains a small classifier in two ranks; the tests compare against a single-process run with the same
global batch (also with gradient accumulation), check that one set of files is written, that gathered predictions
cover the validation set exactly once and in order, that a job SIGKILLed after epoch 1 resumes to the uninterrupted
result, that a failing rank fails the job with its error, and that ``gpu_mode='ddp'`` from a plain process gives the
torchrun result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from aitoolbox.loop.testing import make_classification_data

WORKER = Path(__file__).with_name("_ddp_worker.py")
VARIANTS = ["plain", "checkpoint", "endsave", "checkpoint_endsave"]
N_TRAIN = 256  # the worker's training set size
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(out: Path, *args: str, check: bool = True, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
    proc = subprocess.run(
        [*cmd, "--out", str(out), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # the crash test SIGKILLs the whole group: torchrun and its ranks
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def _python(out: Path, *args: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(WORKER), "--out", str(out), *args], env=_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-6000:]


def _load(out: Path, rank: int = 0) -> dict[str, Any]:
    return torch.load(out / f"rank{rank}.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant under torchrun (the plain one with 2 DataLoader workers per rank), and the 1-process reference."""
    root = tmp_path_factory.mktemp("ddp")
    outs = {}
    for variant in VARIANTS:
        extra = ["--workers", "2"] if variant == "plain" else []
        _torchrun(root / variant, "--variant", variant, *extra)
        outs[variant] = root / variant
    _python(root / "reference", "--variant", "plain", "--reference", "--world", "2")
    outs["reference"] = root / "reference"
    return outs


def _assert_params_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        diff = (a[key] - b[key]).abs().max().item()
        assert diff <= atol, f"{key}: max difference {diff:.3g} > {atol}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_like_one_process_with_the_same_global_batch(runs: dict[str, Path], variant: str) -> None:
    rank0, rank1 = _load(runs[variant], 0), _load(runs[variant], 1)
    reference = _load(runs["reference"])
    assert rank0["world_size"] == 2
    _assert_params_close(rank0["params"], reference["params"], atol=1e-5)
    for key in rank0["params"]:
        assert torch.equal(rank0["params"][key], rank1["params"][key]), "DDP keeps the ranks identical"
    assert rank0["history"] == rank1["history"], "losses are reduced, so every rank holds the same history"
    for rank in (0, 1):
        destroyed = runs[variant] / f"destroyed{rank}.txt"
        # the group is destroyed when the program ends, after the loop dropped its DDP wrapper (which holds it)
        assert destroyed.read_text() == "True ddp_alive=0"
    for name in ("loss", "val_loss"):
        assert rank0["history"][name] == pytest.approx(reference["history"][name], rel=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gathered_predictions_cover_the_validation_set_once_in_order(runs: dict[str, Path], variant: str) -> None:
    labels = make_classification_data(101, seed=2).tensors[1]
    for rank in (0, 1):
        out = _load(runs[variant], rank)
        assert out["y_pred"].shape == (101,)
        assert torch.equal(out["y_true"], labels), "dataset order, no padding duplicate"
    assert torch.equal(_load(runs[variant])["y_pred"], _load(runs["reference"])["y_pred"])


def test_the_training_set_is_evaluated_whole_once_per_sample_not_through_the_training_shards(
    runs: dict[str, Path],
) -> None:
    labels = make_classification_data(N_TRAIN, seed=1).tensors[1]
    rank0, rank1, reference = _load(runs["plain"], 0), _load(runs["plain"], 1), _load(runs["reference"])
    assert rank0["train_loss"] == rank1["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    for out in (rank0, rank1):
        assert torch.equal(out["train_true"], labels), "every sample once, in dataset order"


@pytest.mark.parametrize("variant", ["checkpoint", "endsave", "checkpoint_endsave"])
def test_only_rank_0_writes_one_experiment(runs: dict[str, Path], variant: str) -> None:
    experiments = list((runs[variant] / "results" / "ddp").iterdir())
    assert len(experiments) == 1, experiments
    exp = experiments[0]
    assert _load(runs[variant], 0)["experiment_dir"] == _load(runs[variant], 1)["experiment_dir"] == str(exp)
    if "checkpoint" in variant:
        checkpoints = sorted(p.name for p in (exp / "checkpoint_model").iterdir() if p.name.startswith("ckpt-"))
        assert checkpoints == ["ckpt-e0001-i000000008", "ckpt-e0002-i000000016", "ckpt-e0003-i000000024"]
        rng_ranks = torch.load(exp / "checkpoint_model" / checkpoints[-1] / "rng_ranks.pt", weights_only=False)
        assert len(rng_ranks) == 2, "each rank's RNG state is saved"
    if "endsave" in variant:
        results = _load(runs[variant])["results"]
        assert results["validation"]["classification_report"]["macro avg"]["support"] == 101
        assert (exp / "results").is_dir() and (exp / "model" / "model_state_dict.pt").is_file()
        assert (exp / "summary.md").is_file()


def test_gradient_accumulation_steps_like_one_process_with_the_same_global_batches(tmp_path: Path) -> None:
    # 8 batches per epoch, accumulated by 3: micro-batches 1-2 and 4-5 run under no_sync, 3 and 6 all-reduce and
    # step, and the epoch's last partial group (7-8) must all-reduce too, or the ranks drift apart.
    _torchrun(tmp_path / "ddp", "--variant", "plain", "--accumulate", "3")
    _python(tmp_path / "reference", "--variant", "plain", "--reference", "--world", "2", "--accumulate", "3")
    rank0, rank1, reference = _load(tmp_path / "ddp", 0), _load(tmp_path / "ddp", 1), _load(tmp_path / "reference")
    for key in rank0["params"]:
        assert torch.equal(rank0["params"][key], rank1["params"][key]), "the ranks stay identical"
    _assert_params_close(rank0["params"], reference["params"], atol=1e-5)
    assert rank0["history"]["loss"] == pytest.approx(reference["history"]["loss"], rel=1e-5)
    assert rank0["iteration"] == reference["iteration"] == 3 * 8


# dropout: each rank's RNG must be restored; 8 batches per rank and epoch, an iteration checkpoint every 5
RESUMABLE = ["--variant", "checkpoint_endsave", "--dropout", "0.3", "--save-every", "5"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run the interrupted ones must end equal to."""
    out = tmp_path_factory.mktemp("whole")
    _torchrun(out, *RESUMABLE)
    return _load(out)


def _assert_resumes_to(whole: dict[str, Any], out: Path) -> None:
    _torchrun(out, *RESUMABLE, "--resume")
    resumed = _load(out)
    for key in whole["params"]:
        assert torch.equal(whole["params"][key], resumed["params"][key]), key
    a, b = whole["optimizer"]["state"], resumed["optimizer"]["state"]  # SGD's momentum buffers
    assert a.keys() == b.keys() and all(torch.equal(a[i][n], b[i][n]) for i in a for n in a[i])
    assert whole["history"] == resumed["history"]
    assert len(list((out / "results" / "ddp").iterdir())) == 1, "the resumed run continues its folder"


@pytest.mark.parametrize("crash", [["--crash-after-epoch", "1"], ["--crash-at-iteration", "12"]], ids=["epoch", "mid"])
def test_a_killed_job_resumes_to_the_uninterrupted_result(
    tmp_path: Path, whole: dict[str, Any], crash: list[str]
) -> None:
    # the mid-epoch crash resumes at iteration 10, batch 2 of epoch 1
    crashed = _torchrun(tmp_path / "crash", *RESUMABLE, *crash, check=False)
    assert crashed.returncode != 0 and not (tmp_path / "crash" / "rank0.pt").exists()
    _assert_resumes_to(whole, tmp_path / "crash")


def _preempted(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"preempted{rank}.json").read_text()) for rank in (0, 1)]


def _preemption_checkpoint(out: Path) -> Any:
    from aitoolbox.checkpointing import CheckpointManager

    (exp,) = (out / "results" / "ddp").iterdir()
    manager = CheckpointManager(exp / "checkpoint_model")
    info = manager.load().info
    assert info.name == manager.latest_name() and "preemption" in info.meta
    return info


# SIGTERM to rank 1 only. Mid-epoch: rank 1 wrote boundary 12 into the store, every rank read it at boundary 13, the
# first after it. In epoch 0's end work: rank 1 published epoch 0's last boundary (8) at the epoch end, and both
# stopped after epoch 1's first step.
_ONE_RANK = [(["--preempt-at-iteration", "12"], 13), (["--preempt-at-epoch-end", "0"], 9)]


@pytest.mark.parametrize(("when", "stops_at"), _ONE_RANK, ids=["mid-epoch", "epoch-end"])
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_resumes_exactly(
    tmp_path: Path, whole: dict[str, Any], when: list[str], stops_at: int
) -> None:
    out = tmp_path / "job"
    proc = _torchrun(out, *RESUMABLE, "--preempt-rank", "1", *when, check=False)
    assert proc.returncode != 0 and "exitcode  : 143" in proc.stderr, proc.stderr[-4000:]
    rank0, rank1 = _preempted(out)
    assert rank0["iteration"] == rank1["iteration"] == stops_at and rank0["code"] == rank1["code"] == 143
    assert rank1["signal"] == "SIGTERM" and rank0["signal"] == "SIGTERM on another rank"
    info = _preemption_checkpoint(out)
    assert info.iteration == stops_at and rank0["checkpoint"].endswith(info.name)
    _assert_resumes_to(whole, out)


def test_sigterm_to_torchrun_preempts_the_whole_job_within_its_shutdown_timeout(
    tmp_path: Path, whole: dict[str, Any]
) -> None:
    out = tmp_path / "job"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
    job = subprocess.Popen(
        [*cmd, "--out", str(out), *RESUMABLE, "--preempt-rank", "-1", "--preempt-at-iteration", "12"],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while not (out / "paused").exists():
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # torchrun forwards it to every rank
    time.sleep(1.0)
    (out / "go").touch()
    _, stderr = job.communicate(timeout=60)
    assert "Signal 9" not in stderr and "exitcode  : -9" not in stderr, "torchrun never had to SIGKILL a rank"
    rank0, rank1 = _preempted(out)
    assert rank0["iteration"] == rank1["iteration"] and rank0["code"] == rank1["code"] == 143, stderr[-4000:]
    assert _preemption_checkpoint(out).iteration == rank0["iteration"]
    _assert_resumes_to(whole, out)


def test_a_rank_that_raises_fails_the_job_with_its_error(tmp_path: Path) -> None:
    proc = _torchrun(tmp_path, "--variant", "plain", "--raise-on-rank", "1", check=False, timeout=180)
    assert proc.returncode != 0
    assert "RuntimeError: injected failure on rank 1" in proc.stderr, proc.stderr[-4000:]
    if "Root Cause" in proc.stderr:  # torchrun's summary names the first failure, with the traceback we recorded
        summary = proc.stderr[proc.stderr.rfind("Root Cause") :]
        assert "injected failure on rank 1" in summary, summary


def test_a_stop_decided_on_one_rank_stops_every_rank_at_the_same_batch(tmp_path: Path) -> None:
    proc = _torchrun(tmp_path, "--variant", "plain", "--stop-on-rank", "1", "--stop-at-iteration", "5", "--debug-log")
    # at DEBUG, fit names the callbacks that make the ranks agree after every batch
    assert "ranks agree to stop after every batch (one gloo all-reduce), for ['stop']" in proc.stderr, proc.stderr
    rank0, rank1 = _load(tmp_path, 0), _load(tmp_path, 1)
    assert rank0["iteration"] == rank1["iteration"] == 5, "no rank runs ahead into a collective the other left"
    assert rank0["epoch"] == rank1["epoch"] == 0  # both stopped in (and closed) epoch 0
    assert rank1["stop_reason"] == "stopped by rank 1" and rank0["stop_reason"] == "stopped on another rank"
    assert rank0["history"] == rank1["history"]


def test_gpu_mode_ddp_from_a_plain_process_returns_the_torchrun_result(runs: dict[str, Path], tmp_path: Path) -> None:
    _python(tmp_path, "--variant", "checkpoint_endsave", "--spawn", "2")
    spawned, launched = _load(tmp_path), _load(runs["checkpoint_endsave"])
    for key in launched["params"]:
        assert torch.equal(spawned["params"][key], launched["params"][key]), "the caller gets the trained model"
    assert spawned["history"] == launched["history"]
    assert spawned["results"]["validation"]["accuracy"] == launched["results"]["validation"]["accuracy"]
    assert len(list((tmp_path / "results" / "ddp").iterdir())) == 1


_AFTER_THREADED_OP = """
import torch
from torch import nn, optim
from aitoolbox.loop import TrainLoop
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader

assert torch.get_num_threads() == 2
torch.randn(512, 512) @ torch.randn(512, 512)  # the parent's OpenMP pool is started before the workers are forked
(torch.randn(1_000_000) * 2).sum()
model = TinyClassifier()
tl = TrainLoop(model, make_classification_loader(64, shuffle=True), None, None, optim.SGD(model.parameters(), lr=0.1),
               nn.CrossEntropyLoss(), device="cpu", gpu_mode="ddp", num_processes=2)
tl.fit(num_epochs=2)
print("trained", tl.iteration)
"""


def test_gpu_mode_ddp_after_a_threaded_op_with_omp_threads_does_not_hang(tmp_path: Path) -> None:
    env = {**_env(), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _AFTER_THREADED_OP],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)  # it took 0.5 s of training here; before the fix it hung forever
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise AssertionError("gpu_mode='ddp' hung after a multi-threaded op with OMP_NUM_THREADS=2") from None
    assert proc.returncode == 0, err[-4000:]
    assert "trained 4" in out  # 2 epochs x 2 batches per rank
    assert "OMP_NUM_THREADS=2 is ignored in the workers" in err  # the user hears why, and about torchrun
