"""``TrainLoop(..., compile=True | {...})``: ``torch.compile`` in place, so that checkpoints do not care.

The model is compiled with ``nn.Module.compile`` (its ``state_dict`` keeps the eager names: a checkpoint written
while compiled loads into an eager model and the reverse), ``get_loss`` may be compiled as a bound callable, and the
optimizer step through a function of the loop's own (``optimizer.step`` itself is never replaced, so every
learning-rate scheduler still patches it; the learning rates become tensors, so a schedule does not recompile). A
model given as ``torch.compile(model)`` is unwrapped to the model inside (its ``get_loss``/``get_predictions`` kept)
and compiled in place instead.

The number of graphs compiled is recorded per epoch in the history (``compiled_graphs``) and logged at the end of
``fit``; the reasons of recompiles (guard failures) are logged at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["CompileConfig", "Compiler", "make_compiler", "take_compiled_model", "unwrap_compiled"]

logger = logging.getLogger(__name__)

#: the keyword arguments passed through to ``torch.compile``
TORCH_OPTIONS = ("backend", "disable", "dynamic", "fullgraph", "mode", "options")
#: what to compile (``blocks``: dotted names of submodules compiled one by one instead of the whole model)
PARTS = ("blocks", "loss", "model", "optimizer")


@dataclass(frozen=True)
class CompileConfig:
    """A resolved ``compile=`` option: ``torch.compile``'s keyword arguments and the parts to compile."""

    options: Mapping[str, Any] = field(default_factory=dict)
    model: bool = True
    loss: bool = False
    optimizer: bool = False
    blocks: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, value: object) -> CompileConfig | None:
        """``None``/``False``: off; ``True``: the model with torch's defaults; a dict: ``torch.compile`` options
        (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options``) and parts (``model``, ``loss``,
        ``optimizer``: bools; ``blocks``: submodule names)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise LoopConfigError(f"compile must be True, False or a dict of options, got {type(value).__name__}")
        unknown = sorted(set(value) - set(TORCH_OPTIONS) - set(PARTS))
        if unknown:
            raise LoopConfigError(
                f"unknown compile option(s) {unknown}: torch.compile takes {list(TORCH_OPTIONS)}, and the parts to "
                f"compile are {list(PARTS)} (e.g. compile={{'mode': 'max-autotune', 'optimizer': True}})"
            )
        for name in ("model", "loss", "optimizer"):
            if name in value and not isinstance(value[name], bool):
                raise LoopConfigError(f"compile[{name!r}] must be True or False, got {value[name]!r}")
        blocks = value.get("blocks", ())
        if isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks):
            raise LoopConfigError(f"compile['blocks'] must be a list of submodule names, got {blocks!r}")
        return cls(
            {k: v for k, v in value.items() if k in TORCH_OPTIONS},
            model=bool(value.get("model", True)),
            loss=bool(value.get("loss", False)),
            optimizer=bool(value.get("optimizer", False)),
            blocks=tuple(blocks),
        )


def unwrap_compiled(model: object) -> tuple[object, bool]:
    """``(the module inside, True)`` for a ``torch.compile(module)`` result, else ``(model, False)``."""
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner, True
    return model, False


def _targets(root: nn.Module, blocks: tuple[str, ...]) -> list[nn.Module]:
    """The modules to compile in place: ``root``'s named blocks, or ``root``; refused early when a name is not a
    module."""
    if not blocks:
        return [root]
    found = []
    for name in blocks:
        block: object
        try:
            block = root.get_submodule(name)
        except AttributeError:
            block = getattr(root, name, None)
        if not isinstance(block, nn.Module):
            raise LoopConfigError(
                f"compile['blocks'] names {name!r}, which is {type(block).__name__} on {type(root).__name__}, not "
                "an nn.Module: name submodules (e.g. 'encoder', 'layers.0'), or leave 'blocks' out to compile the "
                "whole model"
            )
        found.append(block)
    return found


class Compiler:
    """Applies a :class:`CompileConfig` to a loop once (when its first fit starts) and counts the graphs."""

    def __init__(self, config: CompileConfig, root: nn.Module) -> None:
        self.config = config
        self.targets = _targets(root, config.blocks) if config.model or config.blocks else []
        self.applied = False
        self.steps: list[Callable[[], Any]] | None = None  # compiled optimizer steps, one per optimizer
        self.fit_graphs = 0  # graphs compiled in the current fit
        self._graphs = 0

    def apply(self, tt_model: nn.Module, optimizers: list[torch.optim.Optimizer], scaler: object) -> None:
        """Compile what the config names (the first time), and start counting this fit's graphs."""
        self.fit_graphs = 0
        if self.applied:
            self._graphs = _graph_count()
            return
        cfg, opts = self.config, dict(self.config.options)
        if cfg.optimizer and scaler is not None:
            raise LoopConfigError(
                "compile={'optimizer': True} cannot be used with use_amp='fp16' (its GradScaler steps the "
                "optimizer itself): use bf16, or leave the optimizer step uncompiled"
            )
        for module in self.targets:
            module.compile(**opts)
        if cfg.loss:
            get_loss: Callable[..., Any] = tt_model.get_loss  # type: ignore[assignment]
            setattr(tt_model, "get_loss", torch.compile(get_loss, **opts))  # noqa: B010  # an instance attribute
        if cfg.optimizer:
            self.steps = [self._compiled_step(opt, opts) for opt in optimizers]
        self.applied = True
        self._graphs = _graph_count()

    @staticmethod
    def _compiled_step(opt: torch.optim.Optimizer, opts: dict[str, Any]) -> Callable[[], Any]:
        for group in opt.param_groups:  # a tensor: a schedule's new value is written into it, not recompiled for
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]))

        def step() -> None:
            opt.step()  # looked up at each call: a scheduler's patched step is the one compiled

        return torch.compile(step, **opts)

    def new_graphs(self) -> int:
        """Graphs compiled since the last call (logging the recompile reasons at DEBUG)."""
        now = _graph_count()
        new, self._graphs = now - self._graphs, now
        self.fit_graphs += new
        if new and logger.isEnabledFor(logging.DEBUG):
            from torch._dynamo.utils import guard_failures  # torch's record of why a guard failed

            for code, reasons in list(guard_failures.items()):
                logger.debug("torch.compile recompiled %s: %s", getattr(code, "co_name", code), reasons[-1:])
        return new


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def take_compiled_model(model: Any, compile: object) -> tuple[Any, object]:
    """The TrainLoop's ``(model, compile)``: ``torch.compile(model)`` is unwrapped to the model inside, compiled in
    place (``compile=True`` unless the caller chose), so its ``get_loss`` is used and its checkpoints keep eager
    names."""
    inner, was_compiled = unwrap_compiled(model)
    if not was_compiled:
        return model, compile
    logger.info(
        "the model is torch.compile(%s): training the %s inside it (its get_loss and get_predictions), compiled in "
        "place with TrainLoop(compile=...) (default True; torch.compile's own arguments are not carried over)",
        type(inner).__name__,
        type(inner).__name__,
    )
    return inner, True if compile is None else compile


def make_compiler(compile: object, tt_model: nn.Module) -> Compiler | None:
    """The loop's :class:`Compiler` for the ``compile=`` option (``None`` when off); bad options refused here."""
    config = CompileConfig.resolve(compile)
    if config is None:
        return None
    inner = getattr(tt_model, "module", None)  # a ModelWrap compiles the module it wraps
    root = inner if type(tt_model).__name__ == "ModelWrap" and isinstance(inner, nn.Module) else tt_model
    return Compiler(config, root)
