"""The original AIToolbox's TrainLoop methods that are not evaluation: a base class of :class:`TrainLoop`."""

from __future__ import annotations

from typing import Any

import torch

from aitoolbox.loop.callbacks.lr_scheduler import LRSchedulerCallback
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.messages import MessageService

__all__ = ["ORIGINAL_DDP_KWARGS", "OriginalLoopAPI", "take_ddp_kwargs"]


class OriginalLoopAPI:
    """What callbacks use besides the counters: the batch loss, the message service, the GradScaler, and the
    history, scheduler and step-count helpers of the original AIToolbox ``TrainLoop``."""

    @property
    def batch_loss(self: Any) -> torch.Tensor | None:
        """The loss of the batch just trained, detached from the graph (on the device; ``.item()`` syncs): what a
        callback reads in ``on_batch_end``. ``None`` before the first batch.

        .. versionadded:: 0.6
        """
        loss = self.state.last_loss
        return None if loss is None else loss.detach()

    @property
    def message_service(self: Any) -> MessageService:
        """The message board callbacks write to and read from (the original's ``tl.message_service``); messages
        written with the default setting are dropped after each epoch's callbacks.

        .. versionadded:: 0.6
        """
        if self.state.messages is None:
            self.state.messages = MessageService()
        return self.state.messages  # type: ignore[no-any-return]

    @property
    def amp_scaler(self: Any) -> torch.amp.GradScaler:
        """The original's name of the GradScaler: :attr:`grad_scaler`, or a disabled one when no scaler runs (its
        ``scale``/``unscale_``/``step`` then do nothing special), as the original always had one.

        .. versionadded:: 0.6
        """
        if self.grad_scaler is not None:
            return self.grad_scaler  # type: ignore[no-any-return]
        disabled = self.__dict__.get("_disabled_scaler")
        if disabled is None:
            disabled = self.__dict__["_disabled_scaler"] = torch.amp.GradScaler(self.device.type, enabled=False)
        return disabled  # type: ignore[no-any-return]

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        """``tl(num_epochs=...)`` is ``tl.fit(num_epochs=...)`` (the original's spelling)."""
        return self.fit(*args, **kwargs)

    def insert_metric_result_into_history(self: Any, metric_name: str, metric_result: Any) -> None:
        """Append ``metric_result`` to the history of ``metric_name`` (created on first use)."""
        self.train_history.insert_single_result_into_history(metric_name, metric_result)

    def get_schedulers(self: Any) -> list[LRSchedulerCallback]:
        """The learning-rate scheduler callbacks of the current (or last) ``fit``."""
        return [cb for cb in self.callbacks if isinstance(cb, LRSchedulerCallback)]

    def get_num_training_steps(self: Any) -> int:
        """The optimizer steps the current ``fit`` makes: ``num_iterations // grad_accumulation``, or
        ``len(train_loader) // grad_accumulation * num_epochs`` (for warmup schedules' ``num_training_steps``)."""
        if self.num_iterations:
            return int(self.num_iterations // self.grad_accumulation)
        return int(len(self.train_loader) // self.grad_accumulation * self.num_epochs)


#: ``fit`` keyword arguments of the original's ``gpu_mode='ddp'`` (``TrainLoop._train_ddp``)
ORIGINAL_DDP_KWARGS = (
    "ddp_model_args",
    "in_process_data_load",
    "num_nodes",
    "node_rank",
    "num_gpus",
    "backend",
    "init_method",
    "on_gpu",
)


def take_ddp_kwargs(loop: Any, callbacks: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Apply the original's ``fit(**ddp_kwargs)`` where they mean something here; refuse, naming the replacement,
    where they do not. Returns the callbacks (``in_process_data_load`` added) and the remaining options."""
    given = {k: options[k] for k in ORIGINAL_DDP_KWARGS if k in options}
    if not given:
        return callbacks, options
    if loop.gpu_mode != "ddp":
        raise LoopConfigError(
            f"fit({', '.join(sorted(given))}=...) configure gpu_mode='ddp'; this TrainLoop is "
            f"gpu_mode={loop.gpu_mode!r}"
        )
    if (
        given.get("num_nodes", 1) != 1
        or given.get("node_rank", 0) != 0
        or given.get("init_method", "env://") != "env://"
    ):
        raise LoopConfigError(
            "several nodes: start the script on every node with `torchrun --nnodes=N --node-rank=R "
            "--rdzv-endpoint=HOST:PORT script.py`; the TrainLoop joins that job (no num_nodes/node_rank/init_method)"
        )
    if given.get("on_gpu", True) is False and loop.device.type == "cuda":
        raise LoopConfigError("on_gpu=False: pass device='cpu' to the TrainLoop (the workers then use gloo)")
    if "backend" in given and given["backend"] not in ("nccl", "gloo"):
        raise LoopConfigError(f"backend={given['backend']!r}: the loop uses nccl on CUDA and gloo on the CPU")
    if given.get("ddp_model_args"):
        loop.ddp_options.update(given["ddp_model_args"])
    if given.get("num_gpus") is not None:
        loop.num_processes = int(given["num_gpus"])
    extra = given.get("in_process_data_load") or []
    extra = [extra] if not isinstance(extra, (list, tuple)) else list(extra)
    merged = None if callbacks is None and not extra else [*(callbacks or []), *extra]
    return merged, {k: v for k, v in options.items() if k not in given}
