"""FSDP2 with real processes: ``torchrun --nproc_per_node=2`` on CPU (gloo), sharded checkpoints through DCP.

One launch trains the same run under DDP and FSDP2 (equal within 1e-6), with gradient accumulation and clipping
too, resumes the FSDP2 run's sharded checkpoints bit-exact from an epoch end and from the middle of an epoch, and
tries bad input (each refused before training, naming the fix). A plain ``python`` process then resumes one of those
checkpoints (world size 2 -> 1) and gets the same weights and optimizer state; a byte flipped in a shard is named by
``verify()``; SIGKILL at each step of a sharded commit leaves ``latest`` loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from aitoolbox.checkpointing import CheckpointCorruptError, CheckpointInfo, CheckpointManager
from aitoolbox.cloud import S3Store
from aitoolbox.cloud.testing import SeaweedServer, aws_environment
from aitoolbox.loop.testing import TinyClassifier

WORKER = Path(__file__).with_name("_fsdp_worker.py")
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(
    out: Path, jobs: str, *args: str, check: bool = True, env: dict[str, str] | None = None, nproc: int = 2
) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER)]
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--jobs", jobs, *args],
        env={**_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # the crash jobs SIGKILL rank 0's process group
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def _load(out: Path, job: str) -> dict[str, Any]:
    return torch.load(out / f"{job}.pt", weights_only=False)


@pytest.fixture(scope="module")
def cloud_env(s3_server: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The worker's cloud jobs' bucket (made by the job) on the session's S3 server, with clean AWS credentials."""
    env = {k: v for k, v in aws_environment(tmp_path_factory.mktemp("aws")).items() if v is not None}
    return {**env, "AITB_TEST_BUCKET": f"fsdp-{uuid.uuid4().hex[:12]}", "AITB_TEST_ENDPOINT": s3_server.endpoint_url}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, cloud_env: dict[str, str]) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    jobs = "ddp,fsdp2,resume-epoch,resume-mid,ddp-resume,fsdp2-from-ddp,ddp-accum,fsdp2-accum,fsdp2-bf16,cloud,errors"
    jobs += ",ddp-compile,fsdp2-compile"
    _torchrun(root, jobs, env=cloud_env)  # one launch: every job a new TrainLoop in the same process group
    return root


def _store(env: dict[str, str]) -> S3Store:
    return S3Store(env["AITB_TEST_BUCKET"], endpoint_url=env["AITB_TEST_ENDPOINT"])


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _checkpoints(out: Path) -> Path:
    return Path(_load(out, "fsdp2")["experiment_dir"]) / "checkpoint_model"


def test_fsdp2_trains_like_ddp(out: Path) -> None:
    ddp, fsdp = _load(out, "ddp"), _load(out, "fsdp2")
    assert _max_diff(ddp["model"], fsdp["model"]) <= 1e-6
    moments = {i: s["exp_avg"] for i, s in ddp["optimizer"]["state"].items()}
    assert _max_diff(moments, {i: s["exp_avg"] for i, s in fsdp["optimizer"]["state"].items()}) <= 1e-6
    assert torch.equal(ddp["y_pred"], fsdp["y_pred"])  # evaluation gathers the sharded model on every rank
    for name in ("loss", "val_loss"):
        assert ddp["history"][name] == pytest.approx(fsdp["history"][name], abs=1e-6)
    # with gradient accumulation (the sync skipped on the first micro-batch) and clipping on sharded gradients
    assert _max_diff(_load(out, "ddp-accum")["model"], _load(out, "fsdp2-accum")["model"]) <= 1e-6


@pytest.mark.parametrize("job", ["ddp-compile", "fsdp2-compile"])
def test_compile_in_place_trains_like_eager_under_each_strategy(out: Path, job: str) -> None:
    """compile={'loss': True, 'optimizer': True} (backend aot_eager) after DDP / FSDP2 wrapped the model."""
    eager, compiled = _load(out, "ddp"), _load(out, job)
    assert set(compiled["model"]) == set(eager["model"]), "the eager state-dict names"
    assert _max_diff(eager["model"], compiled["model"]) <= 1e-5  # decomposed ops: float rounding only
    graphs = compiled["history"]["compiled_graphs"]
    assert graphs[0] >= 1 and graphs[1:] == [0] * (len(graphs) - 1), "no recompile after the first epoch"


@pytest.mark.parametrize("job", ["resume-epoch", "resume-mid"])
def test_a_sharded_checkpoint_resumes_bit_exact(out: Path, job: str) -> None:
    straight, resumed = _load(out, "fsdp2"), _load(out, job)
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])
    for i, state in straight["optimizer"]["state"].items():
        assert all(torch.equal(v, resumed["optimizer"]["state"][i][k]) for k, v in state.items())
    assert resumed["history"] == straight["history"]


def test_ddp_resumes_a_sharded_checkpoint(out: Path) -> None:
    straight, resumed = _load(out, "fsdp2"), _load(out, "ddp-resume")
    assert _max_diff(straight["model"], resumed["model"]) <= 1e-6  # each rank read it whole: DDP's full model
    for name, values in straight["history"].items():
        assert resumed["history"][name] == pytest.approx(values, abs=1e-6)


def test_fsdp2_resumes_a_plain_checkpoint(out: Path) -> None:
    straight, resumed = _load(out, "fsdp2"), _load(out, "fsdp2-from-ddp")  # DDP's checkpoint scattered into shards
    assert _max_diff(straight["model"], resumed["model"]) <= 1e-6
    for name, values in straight["history"].items():
        assert resumed["history"][name] == pytest.approx(values, abs=1e-6)


def test_fsdp2_on_another_world_size_reads_its_new_shards(out: Path, tmp_path: Path) -> None:
    shutil.copy(out / "fsdp2.pt", tmp_path / "fsdp2.pt")  # where the job finds the run it loads from
    _torchrun(tmp_path, "load-other-world", nproc=1)  # a world of one rank: every tensor resharded from two
    loaded, recorded = _load(tmp_path, "load-other-world"), _load(out, "fsdp2")["epochs"][1]
    assert all(torch.equal(loaded["model"][k], v) for k, v in recorded["model"].items())
    for i, state in recorded["optimizer"]["state"].items():
        assert all(torch.equal(loaded["optimizer"]["state"][i][k], v) for k, v in state.items())


def test_sharded_checkpoints_are_committed_with_every_file_verified(out: Path) -> None:
    manager = CheckpointManager(_checkpoints(out))
    infos = manager.list(verify=True)
    assert [i.name for i in infos][-1] == "ckpt-e0003-i000000024" and manager.latest_name() == infos[-1].name
    info = infos[-1]
    assert info.layout == "dcp" and info.world_size == 2 and info.sharded_parts == ("model", "optimizer")
    assert sorted(info.shards) == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # every rank's file
    assert sorted(p.name for p in (info.path / "shards").iterdir()) == sorted(info.shards)
    assert not any(p.name.startswith(".tmp-") for p in manager.directory.iterdir())


def test_use_amp_bf16_maps_onto_fsdp2_mixed_precision(out: Path) -> None:
    full, bf16 = _load(out, "fsdp2-accum"), _load(out, "fsdp2-bf16")
    assert bf16["param_dtype"] == "torch.bfloat16"  # gathered and computed in bf16
    assert all(v.dtype == torch.float32 for v in bf16["model"].values())  # float32 weights (and optimizer state)
    assert bf16["history"]["loss"] == pytest.approx(full["history"]["loss"], abs=1e-2)  # bf16's precision
    assert bf16["history"]["loss"] != full["history"]["loss"]


def test_a_flipped_byte_in_a_shard_is_named_before_anything_loads(out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "checkpoint_model"
    shutil.copytree(_checkpoints(out), copy)
    manager = CheckpointManager(copy)
    shard = copy / "ckpt-e0003-i000000024" / "shards" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"ckpt-e0003-i000000024: shards/__1_0\.distcp fails its SHA-256"):
        manager.verify(CheckpointManager(copy).list()[-1])
    assert manager.load().info.name == "ckpt-e0002-i000000020"  # falls back to the newest good checkpoint


def test_the_final_model_is_one_plain_state_dict(out: Path) -> None:
    fsdp = _load(out, "fsdp2")
    path = Path(fsdp["experiment_dir"]) / "model" / "model_state_dict.pt"
    model = TinyClassifier(dropout=0.1)
    model.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(v, fsdp["model"][k]) for k, v in model.state_dict().items())


def test_one_plain_process_resumes_a_sharded_checkpoint(out: Path) -> None:
    checkpoint = _checkpoints(out) / "ckpt-e0002-i000000016"  # after epoch 2 of 3
    proc = subprocess.run(
        [sys.executable, str(WORKER), "--out", str(out), "--plain", str(checkpoint), "--epochs", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    plain, recorded = _load(out, "plain"), _load(out, "fsdp2")["epochs"][1]
    assert all(torch.equal(plain["model"][k], v) for k, v in recorded["model"].items())
    assert all(torch.equal(plain["loaded_model"][k], v) for k, v in recorded["model"].items())
    for i, state in recorded["optimizer"]["state"].items():
        assert all(torch.equal(plain["optimizer"]["state"][i][k], v) for k, v in state.items())
    assert plain["optimizer"]["param_groups"] == recorded["optimizer"]["param_groups"]
    assert (plain["epoch"], plain["iteration"]) == (1, 16)


def test_bad_input_is_refused_before_training_naming_the_fix(out: Path) -> None:
    errors = json.loads((out / "errors.json").read_text())
    assert errors["ddp-wrapped"].startswith("LoopConfigError: the model is wrapped in DistributedDataParallel")
    assert "pass strategy='fsdp2', not DDP" in errors["sharded-under-ddp"]
    assert errors["other-shape"].startswith("CheckpointIncompatibleError")
    assert "net.0.weight (16, 8) vs (32, 8)" in errors["other-shape"]


@pytest.mark.parametrize("stage", ["shards", "manifest", "rename", "latest"])
def test_sigkill_during_a_sharded_commit_leaves_latest_loadable(tmp_path: Path, stage: str) -> None:
    proc = _torchrun(tmp_path, f"kill-{stage}", check=False)
    assert proc.returncode != 0 and "Signal 9 (SIGKILL)" in proc.stderr, proc.stderr[-3000:]
    (directory,) = (tmp_path / "results" / "fsdp").glob("*/checkpoint_model")
    manager = CheckpointManager(directory)
    assert manager.latest_name() == "ckpt-e0000-i000000005"  # the first commit; the second never became latest
    loaded = manager.load()
    assert loaded.info.name == "ckpt-e0000-i000000005" and loaded.info.layout == "dcp"
    assert loaded["model"].keys() == TinyClassifier().state_dict().keys()  # read whole, in this one process
    assert not manager.damage()  # whatever the kill left is not a committed checkpoint


def test_a_preempted_fsdp2_job_commits_its_shards_and_resumes_exactly(out: Path, tmp_path: Path) -> None:
    proc = _torchrun(tmp_path, "preempt", check=False)
    assert proc.returncode != 0 and "exitcode  : 143" in proc.stderr, proc.stderr[-4000:]
    assert json.loads((tmp_path / "preempted.json").read_text()) == {"iteration": 13, "code": 143}
    (directory,) = (tmp_path / "results" / "fsdp").glob("preempted_*/checkpoint_model")
    info = CheckpointManager(directory).list(verify=True)[-1]
    assert info.iteration == 13 and info.layout == "dcp" and "preemption" in info.meta
    _torchrun(tmp_path, "resume-preempted")
    straight, resumed = _load(out, "fsdp2"), _load(tmp_path, "resume-preempted")
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])
    assert resumed["history"] == straight["history"]


def _bucket_files(store: S3Store, info: CheckpointInfo, local_root: Path) -> dict[str, str]:
    """relative path -> sha256 of checkpoint ``info``'s objects in the bucket."""
    base = store.key(info.path.relative_to(local_root).as_posix() + "/")
    return {o.key[len(base) :]: hashlib.sha256(store.read_bytes(o.key)).hexdigest() for o in store.list(base)}


def test_machines_without_a_shared_folder_put_their_shards_in_the_bucket(
    out: Path, tmp_path: Path, cloud_env: dict[str, str], aws_env: None
) -> None:
    # two epochs mirrored to the bucket, then a new loop resumes to three from `latest`: each machine fetches what
    # it lacks (rank 0: rank 1's shards; rank 1, whose results folder is its own: everything)
    proc = _torchrun(tmp_path, "cloud,cloud-resume", "--private-rank1", env=cloud_env, check=False)
    if "cannot make a private mount" in proc.stderr:
        pytest.skip("this system allows no private mount namespace (needs root): another machine cannot be mimicked")
    assert proc.returncode == 0, proc.stderr[-6000:]
    root = tmp_path / "results"
    (directory,) = root.glob("fsdp/cloud_*/checkpoint_model")
    store = _store(cloud_env)
    infos = CheckpointManager(directory).list()
    assert len(infos) >= 4 and all(i.elsewhere == ("__1_0.distcp",) for i in infos)  # rank 1's: on its machine
    assert not (infos[-1].path / "shards" / "__1_0.distcp").exists()
    for info in infos:  # every file of every checkpoint reached the bucket, the manifest's SHA-256 with it
        in_bucket = _bucket_files(store, info, root)
        assert {f"shards/{name}": entry["sha256"] for name, entry in info.shards.items()}.items() <= in_bucket.items()
        assert "manifest.json" in in_bucket
    pointer = store.read_bytes(store.key(f"{directory.relative_to(root).as_posix()}/latest")).decode().strip()
    assert pointer == infos[-1].name
    with pytest.raises(CheckpointCorruptError, match="written on another machine .* resume with the cloud mirror"):
        infos[-1].verify()
    resumed, straight = _load(tmp_path, "cloud-resume"), _load(out, "fsdp2")
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])
    assert resumed["history"] == straight["history"]


def test_on_a_shared_folder_no_rank_but_0_uploads(out: Path, cloud_env: dict[str, str], aws_env: None) -> None:
    (directory,) = (out / "results").glob("fsdp/cloud_*/checkpoint_model")
    infos = CheckpointManager(directory).list(verify=True)
    assert infos and all(i.elsewhere == () for i in infos)  # rank 0 saw every file: its mirror uploaded them once
    in_bucket = _bucket_files(_store(cloud_env), infos[-1], out / "results")
    assert {f"shards/{n}": e["sha256"] for n, e in infos[-1].shards.items()}.items() <= in_bucket.items()
