"""``gpu_mode='ddp'`` from a plain ``python`` process: start the workers with torch's elastic launcher.

The same engine as ``torchrun --standalone``: a c10d rendezvous on a free localhost port (no fixed port), one worker
per process, the whole job failing with the first failing worker's error. Workers are forked, so they inherit the
TrainLoop (model, loaders, optimizer) without pickling it; rank 0's result comes back to the caller.

A forked worker runs torch's CPU ops on one thread. The OpenMP runtime torch is built with (GNU libgomp) is not
fork-safe: a child of a process that already ran a multi-threaded op deadlocks in its first parallel region (seen
here in DDP's first parameter broadcast with ``OMP_NUM_THREADS=2``: hung past 150 s, where it takes 0.6 s). One
thread never enters the inherited pool. torchrun starts its workers with ``OMP_NUM_THREADS=1`` too; launch with
torchrun for multi-threaded CPU workers.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["launch_fit"]

logger = logging.getLogger(__name__)


def _run_rank(fit: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    import torch

    # A forked child must not enter the parent's OpenMP pool (its threads did not survive the fork): one thread.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # what the worker's own subprocesses (DataLoader workers...) inherit
    fit(**kwargs)
    loop = fit.__self__  # type: ignore[attr-defined]
    return loop._export_run() if loop.is_main_process else None  # type: ignore[no-any-return]


def launch_fit(fit: Callable[..., Any], kwargs: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Run the bound method ``fit(**kwargs)`` on ``nproc`` local workers; return rank 0's exported run."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"aitoolbox-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="fork",
        monitor_interval=0.1,
    )
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    if threads.strip() not in ("", "1"):
        logger.warning(
            "gpu_mode='ddp' forks its workers, and a forked worker cannot use more than one OpenMP thread (the "
            "runtime is not fork-safe: it would deadlock); OMP_NUM_THREADS=%s is ignored in the workers. Launch the "
            "script with torchrun for multi-threaded CPU workers",
            threads,
        )
    results = elastic_launch(config, _run_rank)(fit, kwargs)
    return results[0]  # type: ignore[no-any-return]
