"""``TTDataParallel`` of the original AIToolbox, which this project replaces with DistributedDataParallel."""

from __future__ import annotations

from typing import Any

from aitoolbox.loop import LoopConfigError

__all__ = ["TTDataParallel", "TTDistributedDataParallel"]

_USE_DDP = (
    "{name} is not supported: torch.nn.DataParallel is slower than DistributedDataParallel even on one machine "
    "(PyTorch recommends DDP). Pass the model itself and TrainLoop(..., gpu_mode='ddp') for all GPUs of this "
    "machine from a plain `python` run, or launch the script with `torchrun --nproc-per-node=N`."
)


class TTDataParallel:
    """Refused: use ``gpu_mode='ddp'`` (see the message)."""

    def __init__(self, module: Any, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(_USE_DDP.format(name="TTDataParallel"))


class TTDistributedDataParallel:
    """Refused: the loop wraps the model in DDP itself (``gpu_mode='ddp'`` or ``torchrun``)."""

    def __init__(self, module: Any, *args: Any, **kwargs: Any) -> None:
        raise LoopConfigError(
            "TTDistributedDataParallel is not needed: pass the model itself; the TrainLoop wraps it in "
            "DistributedDataParallel under torchrun or with gpu_mode='ddp'"
        )
