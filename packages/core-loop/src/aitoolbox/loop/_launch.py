"""``gpu_mode='ddp'`` from a plain ``python`` process: start the workers with torch's elastic launcher.

The same engine as ``torchrun --standalone``: a c10d rendezvous on a free localhost port (no fixed port), one worker
per process, the whole job failing with the first failing worker's error. Workers are forked, so they inherit the
TrainLoop (model, loaders, optimizer) without pickling it; rank 0's result comes back to the caller.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["launch_fit"]


def _run_rank(fit: Callable[..., Any], kwargs: dict[str, Any], threads: int) -> dict[str, Any] | None:
    import torch

    # A forked child must not use the parent's OpenMP pool (its threads did not survive the fork): like torchrun,
    # which sets OMP_NUM_THREADS=1 per worker unless the user set it, each worker starts with its own thread count.
    torch.set_num_threads(threads)
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
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    results = elastic_launch(config, _run_rank)(fit, kwargs, threads)
    return results[0]  # type: ignore[no-any-return]
