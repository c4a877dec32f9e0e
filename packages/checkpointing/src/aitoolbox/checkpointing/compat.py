"""Whether saved model and optimizer states fit the objects they are about to be loaded into, named before anything
loads (``load_state_dict`` would fail halfway, or worse, succeed with another optimizer's moments)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from aitoolbox.checkpointing.errors import CheckpointIncompatibleError

__all__ = ["load_model_state", "load_optimizer_states", "without_compile_prefix"]

logger = logging.getLogger(__name__)

_COMPILED = "_orig_mod."  # what torch.compile's wrapper adds to every state-dict key


def without_compile_prefix(own: Mapping[str, Any], state: Mapping[str, Any], where: object) -> Mapping[str, Any]:
    """``state`` with torch.compile's ``_orig_mod.`` taken out of its keys when they all carry it and ``own``'s (the
    model's) do not: the state dict of a ``torch.compile(model)`` loads into the eager model, with a warning."""
    if not state or any(_COMPILED in k for k in own) or not all(_COMPILED in k for k in state):
        return state
    logger.warning(
        "%s holds the state of a torch.compile(model) (keys prefixed '_orig_mod.'): loaded into the eager model "
        "without the prefix (TrainLoop(compile=...) compiles in place and saves the eager names)",
        where,
    )
    return {k.replace(_COMPILED, "", 1): v for k, v in state.items()}


def _describe_mismatch(own: Mapping[str, Any], saved: Mapping[str, Any]) -> str | None:
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(saved))
        if isinstance(saved[k], torch.Tensor) and saved[k].shape != own[k].shape
    ]
    problems = []
    for label, items in (("missing in the checkpoint", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
            problems.append(f"{label}: {', '.join(items[:8])}{more}")
    return "; ".join(problems) or None


def _optimizer_mismatch(i: int, opt: torch.optim.Optimizer, state: Mapping[str, Any], saved_class: str | None) -> str:
    """What differs between optimizer ``i`` and the state saved for it (class, param groups, their options)."""
    own_class = type(opt).__qualname__
    if saved_class is not None and saved_class != own_class:
        return f"optimizer {i} is {own_class} but the checkpoint's is {saved_class}"
    groups = state.get("param_groups", [])
    if len(groups) != len(opt.param_groups):
        return f"optimizer {i} has {len(opt.param_groups)} param groups, the checkpoint's {len(groups)}"
    for g, (own, saved) in enumerate(zip(opt.param_groups, groups, strict=True)):
        if len(own["params"]) != len(saved["params"]):
            return (
                f"param group {g} of optimizer {i} holds {len(own['params'])} parameters, the checkpoint's "
                f"{len(saved['params'])}"
            )
        own_keys, saved_keys = set(own) - {"params"}, set(saved) - {"params"}
        if not saved_keys <= own_keys:  # options torch added since are filled in by load_state_dict
            missing = sorted(saved_keys - own_keys)
            return f"optimizer {i} ({own_class}) has no options {missing} that the checkpoint's optimizer had"
    return ""


def load_model_state(
    model: torch.nn.Module | Mapping[str, Any],
    state: Mapping[str, Any],
    where: object,
    load: Callable[[Mapping[str, Any]], object] | None = None,
) -> None:
    """Load ``state`` into ``model``; a different architecture (missing, unexpected or reshaped tensors) is refused
    first, naming the differences.

    Args:
        model: the module, or its current state dict (whose keys and shapes ``state`` must have).
        state: the saved state dict.
        where: the checkpoint, named in the error.
        load: loads ``state`` (default: ``model.load_state_dict``), e.g. a parallelism's own loader.

    .. versionchanged:: 0.4.1
        ``model`` may be a state dict; ``load``.

    .. versionchanged:: 0.5.1
        A ``torch.compile(model)``'s state dict (``_orig_mod.`` keys) loads into the eager model, with a warning.
    """
    own = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = without_compile_prefix(own, state, f"checkpoint {where}")
    mismatch = _describe_mismatch(own, state)
    if mismatch:
        raise CheckpointIncompatibleError(
            f"checkpoint {where} holds a different model architecture ({mismatch}); resume with the model it was "
            "trained with"
        )
    if load is not None:
        load(state)
    elif isinstance(model, torch.nn.Module):
        model.load_state_dict(state)
    else:
        raise TypeError("load_model_state: give load= when model is a state dict")


def load_optimizer_states(
    optimizers: Sequence[torch.optim.Optimizer],
    states: Sequence[Mapping[str, Any]],
    saved_classes: Sequence[str] | None,
    where: object,
    load: Callable[[torch.optim.Optimizer, Mapping[str, Any]], object] | None = None,
) -> None:
    """Load ``states`` into ``optimizers`` (in order); another count, class or parameter layout is refused first.
    ``load(optimizer, state)`` loads one (default: ``optimizer.load_state_dict``).

    .. versionchanged:: 0.4.1
        ``load``.
    """
    if len(states) != len(optimizers):
        raise CheckpointIncompatibleError(
            f"checkpoint {where} has {len(states)} optimizer states but the TrainLoop has {len(optimizers)} optimizers"
        )
    for i, (opt, state) in enumerate(zip(optimizers, states, strict=True)):
        mismatch = _optimizer_mismatch(i, opt, state, saved_classes[i] if saved_classes else None)
        if mismatch:
            raise CheckpointIncompatibleError(
                f"checkpoint {where}: {mismatch}; resume with the optimizer it was trained with (an optimizer's "
                "state, e.g. Adam's moments, does not carry over to another kind)"
            )
    for i, (opt, state) in enumerate(zip(optimizers, states, strict=True)):
        try:
            if load is None:
                opt.load_state_dict(state)  # type: ignore[arg-type]
            else:
                load(opt, state)
        except (ValueError, KeyError) as err:
            raise CheckpointIncompatibleError(f"optimizer {i} does not match the checkpoint's: {err}") from err
