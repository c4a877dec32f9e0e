"""What a TrainLoop checkpoint holds, the callback that commits it, and the retention options."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from aitoolbox.checkpointing import (
    CheckpointIncompatibleError,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointWriteError,
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
    check_state_keys,
    load_callback_states,
)
from aitoolbox.loop.errors import check_int
from aitoolbox.loop.extensions import FitRun, LoopExtension
from aitoolbox.loop.preemption import Preempted
from aitoolbox.torchtrain._cloud import CloudMirror, download_latest_checkpoint
from aitoolbox.torchtrain._experiment import (
    CHECKPOINT_DIR,
    ExperimentFolder,
    check_resume_from,
    has_checkpoints,
    resolve_resume,
)
from aitoolbox.torchtrain._retention import Retention

logger = logging.getLogger(__name__)

REQUIRED_PARTS = ("model", "optimizer", "loop", "rng", "callbacks")


def collect_parts(tl: LoopView, loop_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to continue ``tl`` exactly, as tensors and plain data (``loop_state``: ``tl.state_dict()``
    when the caller already took it)."""
    strategy, model = tl.strategy, tl.model
    return {
        "model": strategy.model_state_dict(model),
        "optimizer": [strategy.optimizer_state_dict(model, opt) for opt in tl.optimizers],
        "loop": tl.state_dict() if loop_state is None else loop_state,
        "rng": capture_rng_state(),
        "callbacks": callback_states(tl.callbacks),
    }


def apply_model_and_optimizers(tl: TrainLoop, loaded: LoadedCheckpoint, *, strict: bool = True) -> None:
    """Load the model and optimizer states; a different architecture or optimizer is named before anything loads."""
    strategy, model = tl.strategy, tl.model
    if "model" in loaded:
        own = strategy.model_state_dict(model)
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
        #: set when training starts; None on distributed ranks other than 0: they only send their RNG state
        self.manager: CheckpointManager | None = None
        self.meta = dict(meta)
        self.monitor, self.mode = retention.monitor, retention.mode

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
        parts = collect_parts(tl, loop_state)
        bad = first_non_finite({"model": parts["model"], "optimizer": parts["optimizer"]})
        if bad is not None:  # e.g. the step TerminateOnNaN stopped at: such weights must never become `latest`
            loop = parts["loop"]
            logger.error(
                "no checkpoint at epoch %d, iteration %d: %s is not finite (NaN or infinity); `latest` stays at the "
                "checkpoint before it",
                loop["epoch"],
                loop["iteration"],
                bad,
            )
            return None
        if rt.distributed:
            parts["rng_ranks"] = [rng for rng, _ in per_rank]
            parts["loop"]["epoch_loss_sum_ranks"] = [loss_sum for _, loss_sum in per_rank]
        loop = parts["loop"]
        return self.manager.save(
            parts,
            epoch=loop["epoch"],
            iteration=loop["iteration"],
            # only a checkpoint at an epoch end has scores of its own (the history's last row is its epoch's, also
            # for a preemption that lands there); a mid-epoch one would carry the previous epoch's and compete with
            # it for the best-k places: it competes in none
            metrics=tl.train_history.last_numbers() if loop["batch_in_epoch"] == 0 else None,
            meta={**self.meta, **(meta or {})},
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


class Checkpointing(LoopExtension[TrainLoop]):
    """Commits a checkpoint after every epoch (and every ``iteration_save_freq`` iterations) into the experiment
    folder's ``checkpoint_model/``, and resumes from one (``fit(resume_from=...)``) exactly."""

    fit_options: ClassVar[Mapping[str, Any]] = {
        "resume_from": None,
        "allow_partial_resume": False,
        "allow_resume_changes": False,
        "allow_non_finite_resume": False,
    }

    def __init__(
        self, folder: ExperimentFolder, mirror: CloudMirror, retention: Retention, iteration_save_freq: object
    ) -> None:
        every = check_int("iteration_save_freq", iteration_save_freq, 0, expected="an int >= 0 (0: epoch ends only)")
        self.folder, self.retention, self.every = folder, retention, every
        self.mirror = mirror
        self.manager: CheckpointManager | None = None
        self._callback: EpochCheckpoint | None = None
        self._pending: LoadedCheckpoint | None = None

    def check_fit(self, loop: TrainLoop, run: FitRun) -> None:
        check_resume_from(run.options["resume_from"])
        for name in ("allow_partial_resume", "allow_resume_changes", "allow_non_finite_resume"):
            if not isinstance(run.options[name], bool):
                raise LoopConfigError(f"{name} must be True or False, got {run.options[name]!r}")

    def before_fit(self, loop: TrainLoop, run: FitRun) -> None:
        opts = run.options
        if opts["resume_from"] is not None:
            allow = (opts["allow_partial_resume"], opts["allow_resume_changes"], opts["allow_non_finite_resume"])
            loaded = self._load(loop, opts["resume_from"], *allow)
            if loaded is None:  # resume_from='auto' on a first launch
                self._add_callback(loop, run)
                return
            loop.runtime.barrier()  # every rank has read the checkpoint before rank 0 writes or prunes
            # after a resume, num_epochs/num_iterations are totals from the run's start (the engine's rule)
            reached = loop.epochs_done >= run.num_epochs if run.num_epochs else loop.iteration >= run.num_iterations
            if reached:
                logger.info(
                    "nothing to train: the checkpoint is after %d epochs, %d iterations",
                    loop.epochs_done,
                    loop.iteration,
                )
                loop.state.begin_fit(run.num_epochs, run.num_iterations, run.grad_accumulation)  # the targets, reached
                run.train = False  # end-of-training work still runs: pending uploads, EndSave evaluation
                return
            self._pending = loaded
        self._add_callback(loop, run)

    def _add_callback(self, loop: TrainLoop, run: FitRun) -> None:
        meta = {"project_name": self.folder.project_name, "experiment_name": self.folder.experiment_name,
                "variant": type(loop).__name__}  # fmt: skip
        self._callback = (  # a per-batch hook only when something may be due inside an epoch
            EpochAndIterationCheckpoint(meta, self.retention, self.every)
            if self.every or run.num_iterations
            else EpochCheckpoint(meta, self.retention)
        )
        run.callbacks.append(self._callback)

    def on_fit_start(self, loop: TrainLoop) -> None:
        assert self.folder.path is not None and self._callback is not None
        check_state_keys(loop.callbacks)  # before training: every callback's state must come back to it
        self.manager = None
        if loop.is_main_process:  # the other ranks only contribute their RNG states to each checkpoint
            mirror = self.mirror if self.mirror.store is not None else None
            self.manager = CheckpointManager(
                self.folder.path / CHECKPOINT_DIR,
                **self.retention.manager_options,
                on_commit=mirror.upload_checkpoint if mirror is not None else None,
                may_delete=mirror.checkpoint_uploaded if mirror is not None else None,  # kept until uploaded
            )
        self._callback.manager = self.manager
        if self._pending is not None:
            apply_callbacks_and_rng(loop, self._pending)
            self._pending = None

    def on_error(self, loop: TrainLoop, error: BaseException) -> None:
        """Training failed: finish the commit in flight (a checkpoint is never left half-made by a failing fit) and
        report its own error beside the one raised."""
        if self.manager is None:
            return
        try:
            self.manager.wait()
        except CheckpointWriteError as err:
            logger.error("the checkpoint being committed when training failed could not be committed: %s", err)
            if hasattr(error, "add_note"):  # Python 3.11+: the traceback shows it too
                error.add_note(f"also, the checkpoint being committed failed: {err}")

    def on_preempt(self, loop: TrainLoop, preempted: Preempted) -> None:
        """Commit the stop position through the normal path (the manifest records the preemption), newest upload
        first."""
        if self._callback is None:
            return
        since = time.monotonic() - preempted.signal_time
        record = {"signal": preempted.signal, "epoch": preempted.epoch, "iteration": preempted.iteration,
                  "signal_time": time.time() - since, "signal_to_snapshot_s": round(since, 3)}  # fmt: skip
        name = self._callback.save(epoch_end=False, meta={"preemption": record})
        if self.manager is None or name is None:
            return
        self.manager.wait()  # committed (a commit is never cut short: the next signal only shortens the budget)
        preempted.checkpoint = self.manager.directory / name
        preempted.seconds_to_commit = time.monotonic() - preempted.signal_time
        self.mirror.upload_first(name, keep={info.name for info in self.manager.list()})

    def _load(
        self, loop: TrainLoop, resume_from: Any, allow_partial: bool, allow_changes: bool, allow_non_finite: bool
    ) -> LoadedCheckpoint | None:
        runtime = loop.runtime
        resolved = self._resolve(resume_from) if runtime.is_main else None
        resolved = runtime.broadcast(resolved)  # rank 0 decides (downloading if needed); every rank loads that one
        if resolved is None:
            return None
        experiment_dir, info = resolved
        if runtime.is_main:  # a second writer is refused before anything, the model included, is touched
            self.folder.lock(experiment_dir)
        manager = CheckpointManager(experiment_dir / CHECKPOINT_DIR)
        loaded = manager.load(info, required=REQUIRED_PARTS, allow_partial=allow_partial)
        bad = first_non_finite({part: loaded[part] for part in ("model", "optimizer") if part in loaded})
        if bad is not None and not allow_non_finite:
            raise CheckpointIncompatibleError(
                f"checkpoint {loaded.info.path} holds non-finite values ({bad} has a NaN or infinity): training from "
                "it would go on from broken weights. Resume from an earlier checkpoint (resume_from=<its folder>), "
                "or pass allow_non_finite_resume=True to continue anyway"
            )
        if bad is not None:
            logger.warning(
                "resuming from %s although %s is not finite (allow_non_finite_resume=True)", loaded.info.path, bad
            )
        apply_model_and_optimizers(loop, loaded, strict=not allow_changes)
        self.folder.use(loop, experiment_dir, resumed=True)
        if runtime.is_main:
            info = loaded.info
            logger.info("resuming from %s (epoch %d, iteration %d)", info.path, info.epoch, info.iteration)
        return loaded

    def _resolve(self, resume_from: Any) -> tuple[Path, Any] | None:
        """The experiment folder and checkpoint to resume from; ``'latest'`` falls back to the cloud store; ``'auto'``
        is ``'latest'``, or ``None`` (a new run) when no checkpoint of this experiment exists anywhere (damaged ones
        are never passed over: they raise as for ``'latest'``)."""
        folder = self.folder
        root, project, experiment = folder.root, folder.project_name, folder.experiment_name
        if resume_from == "auto":
            try:
                found = self._resolve("latest")
            except CheckpointNotFoundError:
                if has_checkpoints(root, project, experiment):
                    raise
                where = f"under {root}" + (f" nor in {self.mirror.store}" if self.mirror.store is not None else "")
                logger.info("resume_from='auto': no checkpoint of %s/%s %s: a new run", project, experiment, where)
                return None
            return found
        try:
            return resolve_resume(resume_from, root, project, experiment)
        except CheckpointNotFoundError:
            store = self.mirror.store
            if resume_from != "latest" or store is None:
                raise
            if download_latest_checkpoint(store, root, project, experiment) is None:
                raise CheckpointNotFoundError(
                    f"resume_from='latest' found no checkpoint of project {project!r}, experiment {experiment!r} "
                    f"under {root} nor in {store.url(store.key(''))}"
                ) from None
            return resolve_resume(resume_from, root, project, experiment)
