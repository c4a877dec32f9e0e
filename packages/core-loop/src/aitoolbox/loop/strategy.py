"""How the model is wrapped and kept in sync across processes: a :class:`Strategy` value.

The :class:`~aitoolbox.loop.runtime.Runtime` says where a fit runs (rank, world size, collectives); the strategy
owns what parallelism does to the model: wrapping it for the training forward, suppressing the gradient sync
between the micro-batches of an accumulated step, full and sharded model and optimizer state dicts and their
loading, gradient clipping, and whether every rank writes checkpoint files. Everything in the loop and its
extensions that touches these goes through ``loop.strategy``::

    tl = TrainLoop(model, train_loader, None, None, optimizer, criterion, strategy=DDP(find_unused_parameters=True))
    tl.strategy.model_state_dict(tl.model)        # the full state dict, whatever the parallelism

``TrainLoop(strategy=...)`` takes a strategy or its name (``'single'``, ``'ddp'``); ``gpu_mode``/``ddp_options``
map onto them. A new parallelism (FSDP2...) is a subclass.

.. versionadded:: 0.7
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.runtime import Runtime

__all__ = ["DDP", "STRATEGIES", "SingleDevice", "Strategy", "resolve_strategy"]

#: a context manager factory that suppresses the gradient sync of one backward (``ddp.no_sync``)
SyncOff = Callable[[], contextlib.AbstractContextManager[Any]]


class Strategy:
    """Base class: the model trains unwrapped and every state dict is the module's own (one process's view).

    Subclasses override what their parallelism changes. ``full=True`` state dicts are whole and keyed as the
    unwrapped model's (what a checkpoint and the final model hold, loadable by ``model.load_state_dict``);
    ``full=False`` ones are this rank's shard (the same as the full one when nothing is sharded).

    Attributes:
        name: the name ``TrainLoop(strategy=...)`` accepts.
        every_rank_writes: every rank holds a part of the state and writes its own checkpoint files; ``False``:
            the main process writes the full state.
        launches: from a plain ``python`` process, ``fit`` starts the workers (torch's elastic launcher).
        wrapped: the model as the training forward calls it, once :meth:`wrap` made it (``None``: ``get_loss``).
    """

    name: ClassVar[str] = "single"
    every_rank_writes: ClassVar[bool] = False
    launches: ClassVar[bool] = False
    wrapped: nn.Module | None = None

    def check_runtime(self, runtime: Runtime) -> None:
        """Refuse a runtime this strategy cannot train in (called when the training process starts)."""

    def wrap(self, model: nn.Module, device: torch.device, runtime: Runtime) -> nn.Module | None:
        """The module the training forward calls as ``wrapped(batch, criterion, device)`` (its ``forward`` routes to
        ``model.get_loss``), or ``None`` to call ``model.get_loss`` directly. Sets :attr:`wrapped`."""
        return None

    def sync_off(self) -> SyncOff | None:
        """A context manager factory under which a backward does not sync gradients (the micro-batches of an
        accumulated step before its last), or ``None`` when there is nothing to suppress."""
        return None

    def model_state_dict(self, model: nn.Module, *, full: bool = True) -> dict[str, Any]:
        """``model``'s state: whole (``full``) or this rank's shard; tensors may share the model's storage."""
        return model.state_dict()

    def load_model_state_dict(self, model: nn.Module, state: Mapping[str, Any], *, full: bool = True) -> None:
        """Load what :meth:`model_state_dict` returned (with the same ``full``) into ``model``."""
        model.load_state_dict(state)

    def optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, full: bool = True
    ) -> dict[str, Any]:
        """``optimizer``'s state (whole or this rank's shard)."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], *, full: bool = True
    ) -> None:
        """Load what :meth:`optimizer_state_dict` returned into ``optimizer``."""
        optimizer.load_state_dict(state)  # type: ignore[arg-type]

    def clip_grad_norm_(
        self, parameters: Sequence[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> torch.Tensor:
        """Clip the total gradient norm of ``parameters`` (over every rank's shard); returns the norm before."""
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)

    def clip_grad_value_(self, parameters: Sequence[torch.Tensor], clip_value: float) -> None:
        """Clamp every gradient element of ``parameters`` into ``[-clip_value, clip_value]``."""
        torch.nn.utils.clip_grad_value_(parameters, clip_value)

    def release(self) -> None:
        """Drop the wrapper (at exit, before the process groups are destroyed)."""
        self.wrapped = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SingleDevice(Strategy):
    """One process on one device (the default outside ``torchrun``)."""

    def check_runtime(self, runtime: Runtime) -> None:
        if runtime.world_size > 1:
            raise LoopConfigError(
                f"strategy='single' in a distributed launch of {runtime.world_size} processes: every process would "
                "train alone and write over the others; use strategy='ddp' (or leave strategy out)"
            )


class _LossForward(nn.Module):
    """Routes ``get_loss`` through ``forward``, so DDP sees a forward pass (and arms its gradient all-reduce)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, criterion: Any, device: torch.device) -> torch.Tensor:
        return self.model.get_loss(batch, criterion, device)  # type: ignore[operator,no-any-return]


class DDP(Strategy):
    """Distributed data parallel: every rank holds the whole model; gradients are all-reduced in the backward.

    Args:
        **options: keyword arguments of ``torch.nn.parallel.DistributedDataParallel`` (e.g.
            ``find_unused_parameters=True``); ``device_ids`` is set by the loop.

    Under ``torchrun`` it is the default; from a plain ``python`` process ``fit`` starts the workers
    (``num_processes``, as ``gpu_mode='ddp'``). In one process (a launch of one) it trains like :class:`SingleDevice`.
    """

    name: ClassVar[str] = "ddp"
    launches: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        if "device_ids" in options or "module" in options:
            raise LoopConfigError("DDP(...) options must not set device_ids or module: the loop sets them")
        self.options: dict[str, Any] = options

    def wrap(self, model: nn.Module, device: torch.device, runtime: Runtime) -> nn.Module | None:
        if not runtime.distributed:
            return None
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        self.wrapped = DistributedDataParallel(_LossForward(model), device_ids=device_ids, **self.options)
        return self.wrapped

    def sync_off(self) -> SyncOff | None:
        wrapped = self.wrapped
        return None if wrapped is None else wrapped.no_sync  # type: ignore[return-value]  # DDP's, typed loosely

    def __repr__(self) -> str:
        return f"DDP({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


#: the strategies ``TrainLoop(strategy=)`` takes by name
STRATEGIES: dict[str, type[Strategy]] = {"single": SingleDevice, "ddp": DDP}


def resolve_strategy(
    strategy: Strategy | str | None, gpu_mode: str, ddp_options: Mapping[str, Any] | None, *, launched: bool
) -> Strategy:
    """The loop's strategy from ``strategy`` and the original options ``gpu_mode``/``ddp_options``. None asked for:
    DDP with ``gpu_mode='ddp'`` or in a process ``torchrun`` started (``launched``), else :class:`SingleDevice`."""
    if strategy is None:
        return DDP(**(ddp_options or {})) if gpu_mode == "ddp" or launched else SingleDevice()
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise LoopConfigError(f"strategy must be a Strategy or one of {sorted(STRATEGIES)}, got {strategy!r}")
        strategy = DDP(**(ddp_options or {})) if strategy == "ddp" else STRATEGIES[strategy]()
    elif not isinstance(strategy, Strategy):
        raise LoopConfigError(
            f"strategy must be a Strategy (e.g. DDP()) or one of {sorted(STRATEGIES)}, got {type(strategy).__name__}"
        )
    elif ddp_options:
        raise LoopConfigError(f"ddp_options given with strategy={strategy!r}: pass them to DDP(...) instead")
    if gpu_mode == "ddp" and not strategy.launches:
        raise LoopConfigError(f"gpu_mode='ddp' with strategy={strategy!r}: give one of them")
    return strategy
