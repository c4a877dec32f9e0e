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

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import torch

from aitoolbox.loop._distributed import launched
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.strategy import Strategy

__all__ = ["adopt_run", "export_run", "launch", "launch_fit", "will_launch"]

logger = logging.getLogger(__name__)


def will_launch(strategy: Strategy) -> bool:
    """A launching strategy (DDP: ``gpu_mode='ddp'``) in a plain process: ``fit`` starts the workers."""
    return strategy.launches and not launched()


#: workers of ``gpu_mode='ddp'`` on a machine without GPU when ``num_processes`` is not given
CPU_DEFAULT_PROCESSES = 2


def _processes(num_processes: int | None) -> int:
    if num_processes is not None:
        return num_processes
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.cuda.device_count()
    n = min(CPU_DEFAULT_PROCESSES, os.cpu_count() or 1)
    logger.warning(
        "gpu_mode='ddp' without a GPU: training with %d CPU processes (gloo), one thread each; "
        "set num_processes=N to choose",
        n,
    )
    return n


def launch(loop: Any, kwargs: dict[str, Any]) -> None:
    """Run ``loop.fit(**kwargs)`` in ``loop.num_processes`` workers; ``loop`` adopts rank 0's result."""
    if loop.device.type == "cuda" and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        raise LoopConfigError(
            "gpu_mode='ddp' forks its workers, and CUDA was already initialised in this process (a tensor or "
            "model was put on the GPU before fit); CUDA cannot be used in forked workers then. Create the "
            "TrainLoop before touching the GPU, or launch the script with torchrun instead"
        )
    adopt_run(loop, launch_fit(loop.fit, kwargs, _processes(loop.num_processes)))


def export_run(loop: Any) -> dict[str, Any] | None:
    """What a launched rank 0 hands back to the process that called ``fit`` (plain, picklable data); every rank
    calls it (a sharding strategy gathers the model), the others get ``None``."""
    model = loop.strategy.model_state_dict(loop.tt_model)
    if not loop.is_main_process:
        return None
    return {
        "model": {k: v.detach().cpu() for k, v in model.items()},
        "state": loop.state.export(),
        "extensions": [ext.export_run(loop) for ext in loop.extensions],  # in the loop's order
    }


def adopt_run(loop: Any, result: dict[str, Any] | None) -> None:
    assert result is not None, "rank 0 of a launch exports its run"
    loop.strategy.load_model_state_dict(loop.tt_model, result["model"])
    loop.state.adopt(result["state"])
    for ext, data in zip(loop.extensions, result["extensions"], strict=True):
        ext.import_run(loop, data)


def _run_rank(fit: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    # A forked child must not enter the parent's OpenMP pool (its threads did not survive the fork): one thread.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # what the worker's own subprocesses (DataLoader workers...) inherit
    fit(**kwargs)
    loop = fit.__self__  # type: ignore[attr-defined]
    return export_run(loop) if loop.is_main_process or loop.strategy.every_rank_writes else None


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
    with _signal_handlers_kept():
        results = elastic_launch(config, _run_rank)(fit, kwargs)
    return results[0]  # type: ignore[no-any-return]


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Restore the process's signal handlers after the launch: torch's launcher installs handlers that raise
    ``SignalException`` for SIGTERM/SIGINT/SIGHUP/SIGQUIT and leaves them (a later fit's preemption handler would
    chain to them, and the program would no longer end on SIGTERM as it did)."""
    names = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT").split(",")
    sigs = [getattr(signal, name.strip(), None) for name in names]
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in sigs if sig is not None} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
