"""Glue between the loop engine and the checkpointing package: what a TrainLoop checkpoint holds, and the callback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from aitoolbox.checkpointing import (
    CheckpointIncompatibleError,
    CheckpointManager,
    LoadedCheckpoint,
    capture_rng_state,
    restore_rng_state,
)
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.callbacks.base import check_metric_will_exist

if TYPE_CHECKING:
    from aitoolbox.loop import TrainLoop

logger = logging.getLogger(__name__)

REQUIRED_PARTS = ("model", "optimizer", "loop", "rng", "callbacks")


def callback_keys(callbacks: list[Callback]) -> dict[str, Callback]:
    """Stable names for callbacks' states: ``callback_name``, with ``#2``, ``#3`` for repeats."""
    keys: dict[str, Callback] = {}
    for cb in callbacks:
        key, n = cb.callback_name, 1
        while key in keys:
            n += 1
            key = f"{cb.callback_name}#{n}"
        keys[key] = cb
    return keys


def collect_parts(tl: TrainLoop, loop_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to continue ``tl`` exactly, as tensors and plain data (``loop_state``: ``tl.state_dict()``
    when the caller already took it)."""
    return {
        "model": tl.model.state_dict(),
        "optimizer": [opt.state_dict() for opt in tl.optimizers],
        "loop": tl.state_dict() if loop_state is None else loop_state,
        "rng": capture_rng_state(),
        "callbacks": {key: state for key, cb in callback_keys(tl.callbacks).items() if (state := cb.state_dict())},
    }


def numeric_metrics(history: Mapping[str, list[Any]]) -> dict[str, float]:
    out = {}
    for name, values in history.items():
        if values and isinstance(values[-1], int | float) and not isinstance(values[-1], bool):
            out[name] = float(values[-1])
    return out


def _describe_mismatch(model: torch.nn.Module, saved: Mapping[str, Any]) -> str | None:
    own = model.state_dict()
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


def apply_model_and_optimizers(tl: TrainLoop, loaded: LoadedCheckpoint, *, strict: bool = True) -> None:
    """Load the model and optimizer states; a different architecture or optimizer is named before anything loads."""
    if "model" in loaded:
        mismatch = _describe_mismatch(tl.model, loaded["model"])
        if mismatch:
            raise CheckpointIncompatibleError(
                f"checkpoint {loaded.info.path} holds a different model architecture ({mismatch}); resume with "
                "the model it was trained with"
            )
        tl.model.load_state_dict(loaded["model"])
    if "optimizer" in loaded:
        states = loaded["optimizer"]
        if len(states) != len(tl.optimizers):
            raise CheckpointIncompatibleError(
                f"checkpoint {loaded.info.path} has {len(states)} optimizer states but the TrainLoop has "
                f"{len(tl.optimizers)} optimizers"
            )
        saved_classes = loaded["loop"].get("optimizers") if "loop" in loaded else None
        for i, (opt, state) in enumerate(zip(tl.optimizers, states, strict=True)):
            mismatch = _optimizer_mismatch(i, opt, state, saved_classes[i] if saved_classes else None)
            if mismatch:
                raise CheckpointIncompatibleError(
                    f"checkpoint {loaded.info.path}: {mismatch}; resume with the optimizer it was trained with (an "
                    "optimizer's state, e.g. Adam's moments, does not carry over to another kind)"
                )
        for i, (opt, state) in enumerate(zip(tl.optimizers, states, strict=True)):
            try:
                opt.load_state_dict(state)
            except (ValueError, KeyError) as err:
                raise CheckpointIncompatibleError(f"optimizer {i} does not match the checkpoint's: {err}") from err
    if "loop" in loaded:
        tl.load_state_dict(loaded["loop"], strict=strict)


def apply_callbacks_and_rng(tl: TrainLoop, loaded: LoadedCheckpoint) -> None:
    """Restore callback states by name (after registration) and, last, every RNG."""
    saved = dict(loaded.parts.get("callbacks", {}))
    for key, cb in callback_keys(tl.callbacks).items():
        if key in saved:
            cb.load_state_dict(saved.pop(key))
    if saved:
        logger.warning("the checkpoint holds state for callbacks that this run does not have: %s", sorted(saved))
    ctx = tl.distributed
    if ctx is not None and "rng_ranks" in loaded and len(loaded["rng_ranks"]) == ctx.world_size:
        restore_rng_state(loaded["rng_ranks"][ctx.rank])  # each rank continues its own random stream
    elif "rng" in loaded:
        if ctx is not None:
            logger.warning(
                "the checkpoint holds the RNG state of %s process(es), this run has %d: every rank restores rank 0's",
                len(loaded["rng_ranks"]) if "rng_ranks" in loaded else 1,
                ctx.world_size,
            )
        restore_rng_state(loaded["rng"])


class EpochCheckpoint(Callback):
    """Commits a checkpoint at every epoch end (after the other callbacks' epoch-end work) and flushes at the end."""

    stops_mid_epoch = False

    def __init__(
        self, manager: CheckpointManager | None, meta: Mapping[str, Any], retention: Mapping[str, Any]
    ) -> None:
        super().__init__("checkpoint", execution_order=10_000)
        self.manager = manager  # None on distributed ranks other than 0: they only send their RNG state
        self.meta = dict(meta)
        self.monitor: str | None = retention.get("monitor")
        self.mode: str = retention.get("mode", "min")

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        if self.monitor == "val_loss" and tl.validation_loader is None:
            raise LoopConfigError(
                "checkpoints are ranked by 'val_loss' but there is no validation_loader; pass one or rank by 'loss'"
            )

    def on_train_begin(self) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        if self.monitor is None:
            return
        check_metric_will_exist(tl, self.monitor, "checkpoints are ranked by")
        if tl.is_main_process:
            logger.info(
                "checkpoints are ranked by %s, %s (set rm_subopt_mode='min' or 'max' to choose)",
                self.monitor,
                "lower is better" if self.mode == "min" else "higher is better",
            )

    def save(self, *, epoch_end: bool = True) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        monitor = self.monitor
        if epoch_end and monitor and monitor not in tl.train_history:
            raise LoopConfigError(
                f"checkpoints are ranked by {monitor!r}, which is not in the training history "
                f"(it has {sorted(tl.train_history)}); set rm_subopt_local_models to one of those"
            )
        ctx = tl.distributed
        loop_state = None
        if ctx is not None:  # every rank's RNG and partial epoch loss go into the checkpoint: each resumes its own
            loop_state = tl.state_dict()
            per_rank = ctx.gather((capture_rng_state(), loop_state["epoch_loss_sum"]))
            if self.manager is None:
                return
        if self.manager is None:
            return
        parts = collect_parts(tl, loop_state)
        if ctx is not None:
            parts["rng_ranks"] = [rng for rng, _ in per_rank]
            parts["loop"]["epoch_loss_sum_ranks"] = [loss_sum for _, loss_sum in per_rank]
        loop = parts["loop"]
        self.manager.save(
            parts,
            epoch=loop["epoch"],
            iteration=loop["iteration"],
            metrics=numeric_metrics(tl.train_history),
            meta=self.meta,
        )

    def on_epoch_end(self) -> None:
        self.save()

    def on_train_end(self) -> None:
        if self.manager is not None:
            self.manager.wait()


class EpochAndIterationCheckpoint(EpochCheckpoint):
    """Also commits a checkpoint every ``every`` iterations, at the first optimizer-step boundary."""

    def __init__(
        self, manager: CheckpointManager | None, meta: Mapping[str, Any], every: int, retention: Mapping[str, Any]
    ) -> None:
        super().__init__(manager, meta, retention)
        self.every = every
        self._due = False

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        if tl.iteration % self.every == 0:
            self._due = True
        if self._due and tl.batch_in_epoch % tl.grad_accumulation == 0:
            self._due = False
            self.save(epoch_end=False)
