"""How the model is wrapped and kept in sync across processes: a :class:`Strategy` value.

The :class:`~aitoolbox.loop.runtime.Runtime` says where a fit runs (rank, world size, collectives); the strategy
owns what parallelism does to the model: wrapping it for the training forward, suppressing the gradient sync
between the micro-batches of an accumulated step, full and sharded model and optimizer state dicts and their
loading, gradient clipping, and whether every rank writes checkpoint files. Everything in the loop and its
extensions that touches these goes through ``loop.strategy``::

    tl = TrainLoop(model, train_loader, None, None, optimizer, criterion, strategy=DDP(find_unused_parameters=True))
    tl.strategy.model_state_dict(tl.model)        # the full state dict, whatever the parallelism

``TrainLoop(strategy=...)`` takes a strategy or its name (``'single'``, ``'ddp'``, ``'fsdp2'``); ``gpu_mode``/
``ddp_options`` map onto them. A new parallelism is a subclass.

Full state dicts (``full=True``) are what one plain process holds: ``model.state_dict()`` and
``optimizer.state_dict()`` (parameters numbered). Sharded ones (``full=False``) are in the form of
``torch.distributed.checkpoint`` (DCP): the model's keyed by parameter name, the optimizer's ``state`` and
``param_groups[i]['params']`` keyed by parameter name too (so that any world size, or one process, can read them).

.. versionadded:: 0.7
.. versionchanged:: 0.8
    :class:`FSDP2`; ``full=False`` optimizer state dicts are keyed by parameter name; :meth:`Strategy.evaluating`,
    :meth:`Strategy.rebind_optimizers`, :attr:`Strategy.amp_dtype`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.runtime import Runtime

__all__ = [
    "DDP",
    "FSDP2",
    "STRATEGIES",
    "SingleDevice",
    "Strategy",
    "named_optimizer_state",
    "numbered_optimizer_state",
    "resolve_strategy",
]

#: a context manager factory that suppresses the gradient sync of one backward (``ddp.no_sync``)
SyncOff = Callable[[], contextlib.AbstractContextManager[Any]]


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter of ``optimizer`` in its state-dict numbering (groups in order)."""
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in names:
                raise LoopConfigError(
                    f"an optimizer parameter of shape {tuple(p.shape)} is not a parameter of the model; build the "
                    "optimizer from model.parameters()"
                )
            out.append(names[id(p)])
    return out


def named_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> dict[str, Any]:
    """``optimizer.state_dict()``'s form (parameters numbered) turned into DCP's (keyed by parameter name)."""
    names = _param_names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: v for i, v in state["state"].items()}, "param_groups": groups}


def numbered_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> dict[str, Any]:
    """The reverse of :func:`named_optimizer_state`: what ``optimizer.load_state_dict`` takes."""
    index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]
    return {"state": {index[n]: v for n, v in state["state"].items()}, "param_groups": groups}


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
    #: the loop's autocast dtype (``use_amp``), set before :meth:`wrap`; ``None``: full precision
    amp_dtype: torch.dtype | None = None

    def check_runtime(self, runtime: Runtime) -> None:
        """Refuse a runtime this strategy cannot train in (called when the training process starts)."""

    def wrap(self, model: nn.Module, device: torch.device, runtime: Runtime) -> nn.Module | None:
        """The module the training forward calls as ``wrapped(batch, criterion, device)`` (its ``forward`` routes to
        ``model.get_loss``), or ``None`` to call ``model.get_loss`` directly. Sets :attr:`wrapped`."""
        return None

    def rebind_optimizers(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """After :meth:`wrap`: point the optimizers at the parameters the wrap made (sharding replaces them)."""

    def evaluating(self) -> contextlib.AbstractContextManager[Any]:
        """Entered by every rank around an evaluation pass (ranks may run different numbers of batches)."""
        return contextlib.nullcontext()

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
        """``optimizer``'s state: whole (numbered, ``optimizer.state_dict()``) or this rank's shard (named)."""
        state = optimizer.state_dict()
        return state if full else named_optimizer_state(model, optimizer, state)

    def load_optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], *, full: bool = True
    ) -> None:
        """Load what :meth:`optimizer_state_dict` returned (with the same ``full``) into ``optimizer``."""
        optimizer.load_state_dict(state if full else numbered_optimizer_state(model, optimizer, state))  # type: ignore[arg-type]

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
        from torch.distributed.fsdp import FSDPModule
        from torch.nn.parallel import DistributedDataParallel

        if any(isinstance(m, FSDPModule) for m in model.modules()):
            raise LoopConfigError("the model is sharded with fully_shard (FSDP2): pass strategy='fsdp2', not DDP")

        device_ids = [device.index] if device.type == "cuda" else None
        self.wrapped = DistributedDataParallel(_LossForward(model), device_ids=device_ids, **self.options)
        return self.wrapped

    def sync_off(self) -> SyncOff | None:
        wrapped = self.wrapped
        return None if wrapped is None else wrapped.no_sync  # type: ignore[return-value]  # DDP's, typed loosely

    def __repr__(self) -> str:
        return f"DDP({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def default_blocks(model: nn.Module) -> list[nn.Module]:
    """The submodules :class:`FSDP2` shards one by one by default: the children of the first module (from
    ``model`` down through wrappers of one child, e.g. ``ModelWrap``) that has several children with parameters;
    a ``ModuleList``/``ModuleDict`` among them (a stack of layers) counts as its items."""
    node = model
    while True:
        kids = [c for c in node.children() if _has_params(c)]
        if len(kids) != 1 or any(True for _ in node.parameters(recurse=False)):
            break
        node = kids[0]
    blocks: list[nn.Module] = []
    for kid in kids:
        if isinstance(kid, nn.ModuleList | nn.ModuleDict):
            blocks.extend(c for c in kid.children() if _has_params(c))
        else:
            blocks.append(kid)
    return blocks


class FSDP2(Strategy):
    """Fully sharded data parallel (``torch.distributed.fsdp.fully_shard``): every rank holds a shard of each
    parameter, its gradients and the optimizer's state; a block's parameters are all-gathered for its forward and
    backward. Checkpoints are sharded (every rank writes its part, DCP); the final model is one plain state dict.

    Args:
        mesh: the ``DeviceMesh`` to shard over (default: one dimension over every rank).
        blocks: the submodules sharded one by one (each all-gathered on its own), as modules or their names in the
            model; default :func:`default_blocks`. The rest is sharded with the root.
        reshard_after_forward: free a block's gathered parameters after its forward (less memory, one more
            all-gather in the backward).
        mp_policy: a ``MixedPrecisionPolicy``; default: from ``use_amp`` (parameters gathered and computed in the
            autocast dtype, gradients reduced in float32), full precision without it.

    Under ``torchrun``; from a plain ``python`` process ``fit`` starts ``num_processes`` workers, as DDP does. The
    user builds the model and the optimizer as for DDP; the loop shards the model and points the optimizer at the
    sharded parameters. Evaluation gathers the whole model on every rank for the pass (ranks may run different
    numbers of batches), then frees it. Until the loop shards it (and in the process that launched the workers),
    the model's state dicts are its own.
    """

    name: ClassVar[str] = "fsdp2"
    every_rank_writes: ClassVar[bool] = True
    launches: ClassVar[bool] = True

    def __init__(
        self,
        *,
        mesh: Any = None,
        blocks: Sequence[nn.Module | str] | None = None,
        reshard_after_forward: bool = True,
        mp_policy: Any = None,
    ) -> None:
        self.mesh, self.blocks, self.mp_policy = mesh, blocks, mp_policy
        self.reshard_after_forward = reshard_after_forward
        self._names: dict[int, str] = {}

    def check_runtime(self, runtime: Runtime) -> None:
        if self.amp_dtype == torch.float16:
            raise LoopConfigError(
                "use_amp='fp16' with strategy='fsdp2': its gradient scaler would see only this rank's shard; use "
                "use_amp='bf16' (no scaler needed)"
            )

    def mixed_precision(self) -> Any:
        """The ``MixedPrecisionPolicy`` the model is sharded with (``mp_policy``, or from ``use_amp``); ``None``:
        full precision."""
        if self.mp_policy is not None or self.amp_dtype is None:
            return self.mp_policy
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=self.amp_dtype, reduce_dtype=torch.float32)

    def wrap(self, model: nn.Module, device: torch.device, runtime: Runtime) -> nn.Module | None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard
        from torch.nn.parallel import DistributedDataParallel

        if any(isinstance(m, DistributedDataParallel) for m in model.modules()):
            raise LoopConfigError(
                "the model is wrapped in DistributedDataParallel: pass the plain model, strategy='fsdp2' shards it"
            )
        self._names = {id(p): n for n, p in model.named_parameters()}
        mesh = self.mesh if self.mesh is not None else init_device_mesh(device.type, (runtime.world_size,))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": self.reshard_after_forward}
        if (policy := self.mixed_precision()) is not None:
            options["mp_policy"] = policy
        given = self.blocks if self.blocks is not None else default_blocks(model)
        for block in given:
            module = model.get_submodule(block) if isinstance(block, str) else block
            if not isinstance(module, FSDPModule):  # a block the user sharded is kept as it is
                fully_shard(module, **options)
        root = _LossForward(model)
        fully_shard(root, **options)  # the training forward enters the root, whatever get_loss calls
        self.wrapped = root
        return root

    def rebind_optimizers(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not self._names:
            return
        now = dict(model.named_parameters())
        for opt in optimizers:
            if opt.state:
                raise LoopConfigError(
                    "the optimizer already has state (it stepped, or a state dict was loaded into it) when "
                    "strategy='fsdp2' shards the model; load optimizer state through TrainLoop.load_state_dict or "
                    "fit(resume_from=...)"
                )
            for group in opt.param_groups:
                group["params"] = [now[self._names[id(p)]] if id(p) in self._names else p for p in group["params"]]
        self._names = {}

    @contextlib.contextmanager
    def _gathered(self) -> Any:
        from torch.distributed.fsdp import FSDPModule

        root = self.wrapped
        if root is None:
            yield
            return
        modules = [m for m in root.modules() if isinstance(m, FSDPModule)]
        root._get_fsdp_state()._lazy_init()  # type: ignore[operator]  # the wrapper is the root, not a block
        for m in modules:
            m.unshard()
            m.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for m in modules:
                m.reshard()
                m.set_reshard_after_forward(self.reshard_after_forward, recurse=False)

    def evaluating(self) -> contextlib.AbstractContextManager[Any]:
        return self._gathered()

    def sync_off(self) -> SyncOff | None:
        root = self.wrapped
        if root is None:
            return None

        @contextlib.contextmanager
        def off() -> Any:
            root.set_requires_gradient_sync(False)  # type: ignore[operator]
            try:
                yield
            finally:
                root.set_requires_gradient_sync(True)  # type: ignore[operator]

        return off

    @staticmethod
    def _options(full: bool, *, broadcast: bool = False) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full, broadcast_from_rank0=broadcast)

    def model_state_dict(self, model: nn.Module, *, full: bool = True) -> dict[str, Any]:
        """Full: gathered on rank 0 (collective; the other ranks get ``{}``); sharded: this rank's DTensors."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        if self.wrapped is None:  # not sharded (yet, or in the launching process): the module's own
            return super().model_state_dict(model, full=full)
        return get_model_state_dict(model, options=self._options(full))

    def load_model_state_dict(self, model: nn.Module, state: Mapping[str, Any], *, full: bool = True) -> None:
        """Full: rank 0's ``state`` is scattered (the other ranks' is not read); sharded: this rank's."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        if self.wrapped is None:
            super().load_model_state_dict(model, state, full=full)
            return
        options = self._options(full, broadcast=full)
        set_model_state_dict(model, dict(state), options=options)

    def optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, full: bool = True
    ) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        if self.wrapped is None:
            return super().optimizer_state_dict(model, optimizer, full=full)
        state = get_optimizer_state_dict(model, optimizer, options=self._options(full))
        if full and state:
            return numbered_optimizer_state(model, optimizer, state)
        return dict(state)

    def load_optimizer_state_dict(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], *, full: bool = True
    ) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        if self.wrapped is None:
            super().load_optimizer_state_dict(model, optimizer, state, full=full)
            return
        if full:
            named = named_optimizer_state(model, optimizer, state) if state else {}
            options = self._options(True, broadcast=True)
        else:
            named, options = dict(state), self._options(False)
        set_optimizer_state_dict(model, optimizer, named, options=options)

    def clip_grad_norm_(
        self, parameters: Sequence[torch.Tensor], max_norm: float, norm_type: float = 2.0
    ) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)
        full = getattr(norm, "full_tensor", None)  # a DTensor over the mesh: the norm of every rank's shards
        return full() if full is not None else norm

    def __repr__(self) -> str:
        return f"FSDP2(reshard_after_forward={self.reshard_after_forward})"


#: the strategies ``TrainLoop(strategy=)`` takes by name
STRATEGIES: dict[str, type[Strategy]] = {"single": SingleDevice, "ddp": DDP, "fsdp2": FSDP2}


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
