"""The checkpointing extension: commits through the callbacks of :mod:`.commits`, resumes (``resume_from``),
retention, the preemption commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from aitoolbox.checkpointing import (
    CheckpointCorruptError,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointWriteError,
    GroupCollective,
    LoadedCheckpoint,
    first_non_finite,
)
from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.callbacks.base import (
    check_state_keys,
)
from aitoolbox.loop.errors import check_int
from aitoolbox.loop.extensions import FitRun, LoopExtension
from aitoolbox.loop.preemption import Preempted
from aitoolbox.torchtrain._composition.cloud import CloudMirror, download_latest_checkpoint
from aitoolbox.torchtrain._composition.commits import (
    REQUIRED_PARTS,
    EpochAndIterationCheckpoint,
    EpochCheckpoint,
    apply_callbacks_and_rng,
    apply_model_and_optimizers,
    refuse_non_finite,
)
from aitoolbox.torchtrain._composition.experiment import (
    CHECKPOINT_DIR,
    ExperimentFolder,
    check_resume_from,
    has_checkpoints,
    resolve_resume,
)
from aitoolbox.torchtrain._composition.retention import Retention

logger = logging.getLogger(__name__)


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
        self._collective: GroupCollective | None = None  # sharded saves' own process group, made once

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
        meta = {
            "project_name": self.folder.project_name,
            "experiment_name": self.folder.experiment_name,
            "variant": type(loop).__name__,
        }
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
        sharded = loop.strategy.every_rank_writes
        if sharded and loop.runtime.distributed and self._collective is None:
            self._collective = GroupCollective.new_group()  # every rank, now: background commits run on it
        directory = self.folder.path / CHECKPOINT_DIR
        # machines that share no folder with rank 0 store their shards in the bucket themselves
        store_shards = self.mirror.store_shards if sharded and self.mirror.settings.enabled else None
        if loop.is_main_process:  # the other ranks contribute their RNG states, and their shards if sharded
            mirror = self.mirror if self.mirror.store is not None else None
            self.manager = CheckpointManager(
                directory,
                **self.retention.manager_options,
                on_commit=mirror.upload_checkpoint if mirror is not None else None,
                may_delete=mirror.checkpoint_uploaded if mirror is not None else None,  # kept until uploaded
                collective=self._collective,
                store_shards=store_shards,
            )
        elif sharded:
            self.manager = CheckpointManager(directory, collective=self._collective, store_shards=store_shards)
        self._callback.manager = self.manager
        self._callback.experiment = self.folder.path
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
        record = {
            "signal": preempted.signal,
            "epoch": preempted.epoch,
            "iteration": preempted.iteration,
            "signal_time": time.time() - since,
            "signal_to_snapshot_s": round(since, 3),
        }
        name = self._callback.save(epoch_end=False, meta={"preemption": record})
        if self.manager is None or name is None:
            return
        self.manager.wait()  # committed (a commit is never cut short: the next signal only shortens the budget)
        if not loop.is_main_process:
            return
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
        if runtime.distributed and self.mirror.settings.enabled:  # machines without a shared folder: fetch
            name = None
            if runtime.is_main:
                try:
                    name = info.name if info is not None else manager.latest_name()
                except CheckpointCorruptError:  # a damaged pointer: loading falls back as it always does
                    name = None
            name = runtime.broadcast(name)
            if name is not None:
                self.mirror.fetch_missing(experiment_dir, name)
        loaded = manager.load(info, required=REQUIRED_PARTS, allow_partial=allow_partial)
        if loaded.sharded is None:  # a sharded one is checked by each rank on its shards, once read
            bad = first_non_finite({part: loaded[part] for part in ("model", "optimizer") if part in loaded})
            refuse_non_finite(loaded, bad, allow_non_finite)
        apply_model_and_optimizers(loop, loaded, strict=not allow_changes, allow_non_finite=allow_non_finite)
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
