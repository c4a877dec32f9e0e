"""What a TrainLoop checkpoint holds (collected and applied through the loop's strategy), and the callbacks that
commit one at every epoch end and every N iterations."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aitoolbox.checkpointing import (
    CheckpointIncompatibleError,
    CheckpointManager,
    GroupCollective,
    LoadedCheckpoint,
    capture_rng_state,
    first_non_finite,
    restore_rng_state,
)
from aitoolbox.checkpointing.compat import load_model_state, load_optimizer_states
from aitoolbox.loop import LoopConfigError, LoopView, TrainLoop
from aitoolbox.loop.callbacks import Callback, Every
from aitoolbox.loop.callbacks.base import (
    callback_states,
    check_metric_will_exist,
    load_callback_states,
)
from aitoolbox.torchtrain._composition.data_order import write_data_order
from aitoolbox.torchtrain._composition.retention import Retention

logger = logging.getLogger(__name__)

REQUIRED_PARTS = ("model", "optimizer", "loop", "rng", "callbacks")


def collect_sharded(tl: LoopView) -> dict[str, Any]:
    """This rank's share of the model and optimizer states (the strategy's sharded state dicts), for a checkpoint
    that every rank writes."""
    strategy, model = tl.strategy, tl.model
    return {
        "model": strategy.model_state_dict(model, full=False),
        "optimizer": [strategy.optimizer_state_dict(model, opt, full=False) for opt in tl.optimizers],
    }


def collect_parts(tl: LoopView, loop_state: dict[str, Any] | None = None, *, sharded: bool = False) -> dict[str, Any]:
    """Everything needed to continue ``tl`` exactly, as tensors and plain data (``loop_state``: ``tl.state_dict()``
    when the caller already took it); ``sharded``: without the model and optimizer (:func:`collect_sharded`)."""
    strategy, model = tl.strategy, tl.model
    weights = (
        {}
        if sharded
        else {
            "model": strategy.model_state_dict(model),
            "optimizer": [strategy.optimizer_state_dict(model, opt) for opt in tl.optimizers],
        }
    )
    return {
        **weights,
        "loop": tl.state_dict() if loop_state is None else loop_state,
        "rng": capture_rng_state(),
        "callbacks": callback_states(tl.callbacks),
    }


def _collective(tl: TrainLoop) -> GroupCollective | None:
    return GroupCollective() if tl.runtime.distributed else None


def refuse_non_finite(loaded: LoadedCheckpoint, bad: str | None, allow_non_finite: bool) -> None:
    """Raise when ``bad`` names a non-finite tensor of ``loaded`` (training would go on from broken weights), unless
    allowed (then warn)."""
    if bad is None:
        return
    if not allow_non_finite:
        raise CheckpointIncompatibleError(
            f"checkpoint {loaded.info.path} holds non-finite values ({bad} has a NaN or infinity): training from "
            "it would go on from broken weights. Resume from an earlier checkpoint (resume_from=<its folder>), "
            "or pass allow_non_finite_resume=True to continue anyway"
        )
    logger.warning("resuming from %s although %s is not finite (allow_non_finite_resume=True)", loaded.info.path, bad)


def _apply_sharded(tl: TrainLoop, loaded: LoadedCheckpoint, strict: bool, allow_non_finite: bool) -> None:
    """A sharded checkpoint: keys and shapes checked against its metadata first (no data read). Under a sharding
    strategy, each rank reads its share into the strategy's sharded state (DCP reshards to this world size); else
    (one process, or DDP) it is read whole. Either way it loads through the strategy's sharded (``full=False``)
    state dicts."""
    strategy, model, path = tl.strategy, tl.model, loaded.info.path
    sharded = loaded.sharded
    assert sharded is not None
    own = strategy.model_state_dict(model, full=False)
    load_model_state(own, sharded.shapes("model"), path, lambda _: None)  # names a different architecture
    saved = loaded.rest.get("optimizer") or {}
    count = len(saved.get("items", [])) if isinstance(saved, dict) else 0
    if count != len(tl.optimizers):
        raise CheckpointIncompatibleError(
            f"checkpoint {path} has {count} optimizer states but the TrainLoop has {len(tl.optimizers)} optimizers"
        )
    if tl.runtime.distributed and strategy.every_rank_writes:  # this rank's shards, resharded from any world size
        targets = {
            "model": own,
            "optimizer": [strategy.optimizer_state_dict(model, opt, full=False) for opt in tl.optimizers],
        }
        states = loaded.read_sharded(targets, _collective(tl))
    else:
        states = {"model": loaded["model"], "optimizer": loaded["optimizer"]}
    strategy.load_model_state_dict(model, states["model"], full=False)
    saved_classes = loaded["loop"].get("optimizers") if "loop" in loaded else None
    load_optimizer_states(
        tl.optimizers,
        states["optimizer"],
        saved_classes,
        path,
        lambda opt, state: strategy.load_optimizer_state_dict(model, opt, state, full=False),
    )
    bad = first_non_finite(collect_sharded(tl))  # this rank's shard; every rank agrees
    refuse_non_finite(
        loaded, (bad or "a shard on another rank") if tl.runtime.any(bad is not None) else None, allow_non_finite
    )
    if "loop" in loaded:
        tl.load_state_dict(loaded["loop"], strict=strict)


def apply_model_and_optimizers(
    tl: TrainLoop, loaded: LoadedCheckpoint, *, strict: bool = True, allow_non_finite: bool = False
) -> None:
    """Load the model and optimizer states; a different architecture or optimizer is named before anything loads."""
    strategy, model = tl.strategy, tl.model
    if loaded.sharded is not None and "model" in loaded.info.sharded_parts:
        _apply_sharded(tl, loaded, strict, allow_non_finite)
        return
    if "model" in loaded:
        # a sharding strategy compares against its shards' global shapes (no gather), then scatters rank 0's state
        own = strategy.model_state_dict(model, full=not (strategy.every_rank_writes and tl.runtime.distributed))
        load_model_state(
            own, loaded["model"], loaded.info.path, lambda state: strategy.load_model_state_dict(model, state)
        )
    if "optimizer" in loaded:
        saved_classes = loaded["loop"].get("optimizers") if "loop" in loaded else None
        load_optimizer_states(
            tl.optimizers,
            loaded["optimizer"],
            saved_classes,
            loaded.info.path,
            lambda opt, state: strategy.load_optimizer_state_dict(model, opt, state),
        )
    if "loop" in loaded:
        tl.load_state_dict(loaded["loop"], strict=strict)


def apply_callbacks_and_rng(tl: TrainLoop, loaded: LoadedCheckpoint) -> None:
    """Restore callback states by name (after registration) and, last, every RNG."""
    unknown = load_callback_states(tl.callbacks, loaded.parts.get("callbacks", {}))
    if unknown:
        logger.warning("the checkpoint holds state for callbacks that this run does not have: %s", unknown)
    rt = tl.runtime
    if rt.distributed and "rng_ranks" in loaded and len(loaded["rng_ranks"]) == rt.world_size:
        restore_rng_state(loaded["rng_ranks"][rt.rank])  # each rank continues its own random stream
    elif "rng" in loaded:
        if rt.distributed:
            logger.warning(
                "the checkpoint holds the RNG state of %s process(es), this run has %d: every rank restores rank 0's",
                len(loaded["rng_ranks"]) if "rng_ranks" in loaded else 1,
                rt.world_size,
            )
        restore_rng_state(loaded["rng"])


class EpochCheckpoint(Callback):
    """Commits a checkpoint at every epoch end (after the other callbacks' epoch-end work) and flushes at the end."""

    stops_mid_epoch = False

    def __init__(self, meta: Mapping[str, Any], retention: Retention) -> None:
        super().__init__("checkpoint", execution_order=10_000)
        #: set when training starts; None on distributed ranks other than 0 (they only send their RNG state), unless
        #: every rank writes its share (a sharding strategy)
        self.manager: CheckpointManager | None = None
        self.meta = dict(meta)
        self.monitor, self.mode = retention.monitor, retention.mode
        #: the experiment folder, where each commit brings ``data_order.json`` up to date first (set at the start)
        self.experiment: Path | None = None

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        if self.monitor == "val_loss" and tl.validation_loader is None:
            raise LoopConfigError(
                "checkpoints are ranked by 'val_loss' but there is no validation_loader; pass one or rank by 'loss'"
            )

    def on_train_begin(self) -> None:
        tl = self.train_loop_obj
        if self.monitor is None:
            return
        check_metric_will_exist(tl, self.monitor, "checkpoints are ranked by")
        if tl.is_main_process:
            logger.info(
                "checkpoints are ranked by %s, %s (set rm_subopt_mode='min' or 'max' to choose)",
                self.monitor,
                "lower is better" if self.mode == "min" else "higher is better",
            )

    def save(self, *, epoch_end: bool = True, meta: Mapping[str, Any] | None = None) -> str | None:
        """Commit a checkpoint of the loop now (every rank calls it); its name, on the rank that writes."""
        tl = self.train_loop_obj
        monitor = self.monitor
        if epoch_end and monitor and monitor not in tl.train_history:
            raise LoopConfigError(
                f"checkpoints are ranked by {monitor!r}, which is not in the training history "
                f"(it has {sorted(tl.train_history)}); set rm_subopt_local_models to one of those"
            )
        rt = tl.runtime
        loop_state = None
        if rt.distributed:  # every rank's RNG and partial epoch loss go into the checkpoint: each resumes its own
            loop_state = tl.state_dict()
            per_rank = rt.gather((capture_rng_state(), loop_state["epoch_loss_sum"]))
        if self.manager is None:
            return None
        sharded = collect_sharded(tl) if tl.strategy.every_rank_writes else None
        main = tl.is_main_process
        parts = collect_parts(tl, loop_state, sharded=sharded is not None) if main else {}
        bad = first_non_finite(sharded if sharded is not None else {k: parts[k] for k in ("model", "optimizer")})
        if sharded is not None:  # each rank checked its share; all skip or none
            bad = (bad or "a shard on another rank") if rt.any(bad is not None) else None
        if bad is not None:  # e.g. the step TerminateOnNaN stopped at: such weights must never become `latest`
            loop = tl.state_dict() if loop_state is None else loop_state
            logger.error(
                "no checkpoint at epoch %d, iteration %d: %s is not finite (NaN or infinity); `latest` stays at the "
                "checkpoint before it",
                loop["epoch"],
                loop["iteration"],
                bad,
            )
            return None
        if rt.distributed and main:
            parts["rng_ranks"] = [rng for rng, _ in per_rank]
            parts["loop"]["epoch_loss_sum_ranks"] = [loss_sum for _, loss_sum in per_rank]
        loop = parts["loop"] if main else (loop_state or tl.state_dict())
        order = {"data_order": loop["data_order"]} if loop.get("data_order") else {}
        write_data_order(self.experiment, tl)
        return self.manager.save(
            parts,
            sharded=sharded,
            epoch=loop["epoch"],
            iteration=loop["iteration"],
            # only a checkpoint at an epoch end has scores of its own (the history's last row is its epoch's, also
            # for a preemption that lands there); a mid-epoch one would carry the previous epoch's and compete with
            # it for the best-k places: it competes in none
            metrics=tl.train_history.last_numbers() if loop["batch_in_epoch"] == 0 else None,
            meta={**self.meta, **(meta or {}), **order},
        )

    def on_epoch_end(self) -> None:
        self.save()

    def on_train_end(self) -> None:
        if self.manager is not None:
            self.manager.wait()


class EpochAndIterationCheckpoint(EpochCheckpoint):
    """Also commits a checkpoint every ``every`` iterations (0: never), at the first optimizer-step boundary, and,
    when ``fit(num_iterations=N)`` ends inside an epoch, at that last step: the resume point, committed before the
    cut epoch is closed (its history row, ``on_epoch_end``), so that a resume finishes the epoch as one run would.
    The checkpoint of the cut epoch's close is not committed: resuming from it would skip the epoch's rest."""

    def __init__(self, meta: Mapping[str, Any], retention: Retention, every: int) -> None:
        super().__init__(meta, retention)
        self.every = every
        self.schedule = Every(every, "step") if every else None
        self._due = False
        self._cut = False

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if self.schedule is not None and self.schedule.due(tl.iteration):
            self._due = True
        boundary = tl.batch_in_epoch % tl.grad_accumulation == 0
        if tl.iteration == tl.num_iterations and tl.batch_in_epoch != tl.epoch_length:  # the budget ends mid-epoch
            self._cut = boundary
            self._due = boundary
            if not boundary and tl.is_main_process:
                logger.warning(
                    "num_iterations=%d ends inside a gradient accumulation: a resume continues from the next epoch",
                    tl.num_iterations,
                )
        if self._due and boundary:
            self._due = False
            self.save(epoch_end=False)

    def on_epoch_end(self) -> None:
        if self._cut:
            self._cut = False
            return  # the mid-epoch checkpoint just committed is where a resume continues
        self.save()
