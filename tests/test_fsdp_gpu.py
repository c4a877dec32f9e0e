"""FSDP2 on GPUs with bf16 (``use_amp='bf16'`` maps onto FSDP2's ``MixedPrecisionPolicy``): skipped without CUDA.

Run it alone when a GPU machine is lent: ``uv run pytest tests/test_fsdp_gpu.py -q`` (one torchrun launch over every
visible GPU, at most two; NCCL). It trains the worker's run under DDP and FSDP2 with bf16, checks that the losses
agree to bf16's precision, that the sharded checkpoints hold float32 weights (the policy casts only what is gathered
for compute), and that a mid-epoch resume is bit-exact on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aitoolbox.checkpointing import CheckpointManager

WORKER = Path(__file__).with_name("_fsdp_worker.py")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine)"),
]


def test_fsdp2_with_bf16_on_gpus(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    n = min(2, torch.cuda.device_count())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", str(WORKER)]
    args = ["--out", str(tmp_path), "--jobs", "ddp,fsdp2,resume-mid", "--device", "cuda", "--amp", "bf16"]
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    ddp, fsdp, resumed = (torch.load(tmp_path / f"{j}.pt", weights_only=False) for j in ("ddp", "fsdp2", "resume-mid"))
    assert ddp["history"]["loss"] == pytest.approx(fsdp["history"]["loss"], abs=2e-2)  # bf16 compute both ways
    assert all(v.dtype == torch.float32 for v in fsdp["model"].values())  # float32 master weights
    assert all(torch.equal(fsdp["model"][k], resumed["model"][k]) for k in fsdp["model"])
    loaded = CheckpointManager(Path(fsdp["experiment_dir"]) / "checkpoint_model").load()
    assert loaded.info.layout == "dcp" and loaded.info.world_size == n
    assert all(v.dtype == torch.float32 for v in loaded["model"].values())
