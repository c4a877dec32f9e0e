"""The tracked TrainLoop variants."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aitoolbox.checkpointing import CheckpointManager, CheckpointNotFoundError, LoadedCheckpoint
from aitoolbox.experiment import ExperimentWriter
from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import LoopConfigError, TrainLoop, TTModel, resolve_mode
from aitoolbox.loop.callbacks import Callback
from aitoolbox.torchtrain._checkpoint import (
    REQUIRED_PARTS,
    EpochAndIterationCheckpoint,
    EpochCheckpoint,
    apply_callbacks_and_rng,
    apply_model_and_optimizers,
)
from aitoolbox.torchtrain._cloud import ExperimentUploads, download_latest_checkpoint, make_store
from aitoolbox.torchtrain._end_save import check_result_packages, end_save, end_save_predictions
from aitoolbox.torchtrain._experiment import (
    CHECKPOINT_DIR,
    new_experiment_dir,
    prepare_root,
    resolve_resume,
    validate_names,
)

__all__ = ["TrainLoopCheckpoint", "TrainLoopCheckpointEndSave", "TrainLoopEndSave"]

logger = logging.getLogger(__name__)

_CLOUD_MODES = (None, "local", "s3", "gcs")


def _check_cloud_mode(cloud_save_mode: object) -> None:
    if cloud_save_mode not in _CLOUD_MODES:
        raise LoopConfigError(f"cloud_save_mode must be None, 'local', 's3' or 'gcs', got {cloud_save_mode!r}")


def _retention(rm_subopt_local_models: object, num_best_checkpoints_kept: object, mode: object) -> dict[str, Any]:
    """The original AIToolbox retention options as CheckpointManager settings."""
    if num_best_checkpoints_kept is not None:
        if (
            isinstance(num_best_checkpoints_kept, bool)
            or not isinstance(num_best_checkpoints_kept, int)
            or num_best_checkpoints_kept < 1
        ):
            raise LoopConfigError(
                f"num_best_checkpoints_kept must be a positive int, got {num_best_checkpoints_kept!r}"
            )
        if rm_subopt_local_models is False:
            raise LoopConfigError(
                f"num_best_checkpoints_kept={num_best_checkpoints_kept} needs a metric to rank checkpoints by: set "
                "rm_subopt_local_models=True (ranks by 'loss') or to a history metric such as 'val_loss'"
            )
    if rm_subopt_local_models is False or rm_subopt_local_models is None:
        return {"keep_last": None, "keep_best": 0, "monitor": None, "mode": "min"}
    if rm_subopt_local_models is True:
        monitor = "loss"
    elif isinstance(rm_subopt_local_models, str) and rm_subopt_local_models:
        monitor = rm_subopt_local_models
    else:
        raise LoopConfigError(
            f"rm_subopt_local_models must be False, True or a history metric name, got {rm_subopt_local_models!r}"
        )
    if mode not in ("auto", "min", "max"):
        raise LoopConfigError(f"rm_subopt_mode must be 'auto', 'min' or 'max', got {mode!r}")
    direction = resolve_mode(monitor, mode)  # the rule EarlyStopping(mode='auto') follows too
    return {"keep_last": 1, "keep_best": num_best_checkpoints_kept or 2, "monitor": monitor, "mode": direction}


class _TrackedTrainLoop(TrainLoop):
    """What the tracked variants share: the experiment folder, hyperparameters and the cloud settings."""

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Any,
        validation_loader: Any,
        test_loader: Any,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        criterion: Callable[..., torch.Tensor] | None,
        *,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None,
        cloud_save_mode: str | None,
        bucket_name: str | None,
        cloud_dir_prefix: str,
        cloud_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        validate_names(project_name, experiment_name)
        if hyperparams is not None and not isinstance(hyperparams, Mapping):
            raise LoopConfigError(f"hyperparams must be a dict or None, got {type(hyperparams).__name__}")
        _check_cloud_mode(cloud_save_mode)
        super().__init__(model, train_loader, validation_loader, test_loader, optimizer, criterion, **kwargs)
        self.local_model_result_folder_path = prepare_root(local_model_result_folder_path)  # before the network
        self.cloud_store: Any = None
        self._cloud_options: dict[str, Any] = {}
        # checked now, before any training: name, credentials, bucket, write (by the process that uploads: rank 0)
        if cloud_save_mode in ("s3", "gcs") and self.is_main_process:
            self.cloud_store, self._cloud_options = make_store(
                cloud_save_mode, bucket_name, cloud_dir_prefix, cloud_options
            )
        self.cloud_uploads: ExperimentUploads | None = None
        self.upload_report: Any = None
        self.project_name = project_name
        self.experiment_name = experiment_name
        self.hyperparams = dict(hyperparams or {})
        self.cloud_save_mode = cloud_save_mode
        self.bucket_name = bucket_name
        self.cloud_dir_prefix = cloud_dir_prefix
        self.experiment_dir: Path | None = None

    def _ensure_experiment_dir(self) -> Path:
        if self.experiment_dir is None:
            path = None
            if self.is_main_process:  # in distributed runs rank 0 creates the folder and tells the others
                path = new_experiment_dir(self.local_model_result_folder_path, self.project_name, self.experiment_name)
                ExperimentWriter(path).write_hyperparams(self.hyperparams)
            if self.distributed is not None:
                path = self.distributed.broadcast(path)
            assert path is not None
            self._attach_experiment(path, resumed=False)
            if self.cloud_uploads is not None:
                self.cloud_uploads.upload_files([path / "hyperparams.json"])
        assert self.experiment_dir is not None
        return self.experiment_dir

    def _export_run(self) -> dict[str, Any]:
        return {**super()._export_run(), "experiment_dir": self.experiment_dir, "upload_report": self.upload_report}

    def _import_run(self, result: dict[str, Any]) -> None:
        super()._import_run(result)
        self.experiment_dir = result["experiment_dir"]
        self.upload_report = result["upload_report"]

    def _attach_experiment(self, path: Path, *, resumed: bool) -> None:
        """Use ``path`` as the experiment folder; with cloud saving, set up its uploads (and re-queue pending ones)."""
        self.experiment_dir = path
        if self.is_main_process:
            logger.info("experiment folder: %s", path)
        if self.cloud_store is not None and (self.cloud_uploads is None or self.cloud_uploads.experiment_dir != path):
            self.cloud_uploads = ExperimentUploads(self.cloud_store, path, self.project_name, self._cloud_options)
            if resumed:
                self.cloud_uploads.uploader.resume_pending()

    def fit(
        self,
        num_epochs: int = 0,
        num_iterations: int = 0,
        callbacks: Sequence[Callback] | None = None,
        grad_accumulation: int = 1,
    ) -> TTModel | nn.Module:
        self._validate_fit_args(num_epochs, num_iterations, grad_accumulation)
        if self._will_launch():
            kwargs = {"num_epochs": num_epochs, "num_iterations": num_iterations, "callbacks": callbacks}
            return self._launch(self.fit, {**kwargs, "grad_accumulation": grad_accumulation})
        self._ensure_distributed()
        self._ensure_experiment_dir()
        try:
            model = super().fit(num_epochs, num_iterations, callbacks, grad_accumulation)
        except BaseException:
            # what was committed before the error goes up if it can quickly; the rest stays in the journal
            self._finish_uploads(timeout=30.0)
            raise
        self._after_fit()
        return model

    def _after_fit(self) -> None:
        """Runs once training ended normally; subclasses add their end-of-training work before calling this."""
        self._finish_uploads()

    def _finish_uploads(self, timeout: float | None = None) -> None:
        if self.cloud_uploads is not None:
            self.upload_report = self.cloud_uploads.finish(timeout)


class TrainLoopCheckpoint(_TrackedTrainLoop):
    """TrainLoop that commits a crash-safe checkpoint after every epoch (and every ``iteration_save_freq`` iterations).

    Checkpoints go to
    ``<local_model_result_folder_path>/<project_name>/<experiment_name>_<timestamp>/checkpoint_model/``
    (the folders are created as needed). Each holds the model, optimizer(s), loop position (epoch, iteration, batch
    inside the epoch), training history, GradScaler, every RNG and the state of stateful callbacks, so that
    ``fit(num_epochs=N, resume_from=...)`` continues exactly where the run stopped. Under ``torchrun`` (or with
    ``gpu_mode='ddp'``) rank 0 writes the checkpoints, each holding every rank's RNG state, and every rank resumes
    from the checkpoint rank 0 resolves.

    Args:
        model, train_loader, validation_loader, test_loader, optimizer, criterion: as for :class:`TrainLoop`.
        project_name: folder grouping experiments.
        experiment_name: the experiment's name; the folder gets a timestamp suffix.
        local_model_result_folder_path: the results root.
        hyperparams: a dict saved as ``hyperparams.json`` in the experiment folder (copied, never modified).
        cloud_save_mode: ``'local'`` (default) or ``None``: local disk only, nothing touches the network. ``'s3'``:
            also upload everything written to ``s3://<bucket_name>/<cloud_dir_prefix>/<project_name>/<folder>/``,
            in the background (checkpoint files, then manifest, then ``latest``), after a preflight at construction.
            ``'gcs'``: the same through Google Cloud Storage's S3-compatible endpoint, with HMAC keys as AWS keys.
        bucket_name, cloud_dir_prefix: the bucket (S3 naming rules are checked first) and a key prefix.
        cloud_options: ``endpoint_url``, ``region``, ``profile`` (else boto3's chain: ``AWS_ENDPOINT_URL``...),
            ``create_bucket`` (False), ``max_attempts``, ``backoff_s``, ``flush_timeout_s`` (600), ``part_size``.
        rm_subopt_local_models: ``False`` keeps every checkpoint; ``True`` keeps the ``num_best_checkpoints_kept``
            best by ``'loss'`` plus the newest; a metric name ranks by that metric. A metric that nothing in the run
            produces is refused before epoch 1.
        rm_subopt_mode: which direction of the ranking metric is better: ``'auto'`` (default: minimise names with
            loss/error/mse/mae/rmse/perplexity..., maximise the rest; the same rule as ``EarlyStopping``),
            ``'min'`` or ``'max'``. The direction is logged when training starts.
        num_best_checkpoints_kept: how many best checkpoints to keep (default 2 when ranking).
        iteration_save_freq: also checkpoint every N iterations (0: only at epoch ends).
        **kwargs: the keyword options of :class:`TrainLoop` (``device``, ``use_amp``, ...).

    Example:
        .. code-block:: python

            tl = TrainLoopCheckpoint(model, train_loader, val_loader, None, optimizer, criterion,
                                     project_name="proj", experiment_name="exp", local_model_result_folder_path="runs",
                                     hyperparams={"lr": 1e-3})
            tl.fit(num_epochs=10)
            # after a crash, in a new process with the same model/optimizer/loaders:
            tl.fit(num_epochs=10, resume_from="latest")
    """

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Any,
        validation_loader: Any,
        test_loader: Any,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        criterion: Callable[..., torch.Tensor] | None,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None = None,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        *,
        rm_subopt_local_models: bool | str = False,
        num_best_checkpoints_kept: int | None = None,
        iteration_save_freq: int = 0,
        rm_subopt_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
        if isinstance(iteration_save_freq, bool) or not isinstance(iteration_save_freq, int) or iteration_save_freq < 0:
            raise LoopConfigError(
                f"iteration_save_freq must be an int >= 0 (0: epoch ends only), got {iteration_save_freq!r}"
            )
        self._retention = _retention(rm_subopt_local_models, num_best_checkpoints_kept, rm_subopt_mode)
        super().__init__(
            model, train_loader, validation_loader, test_loader, optimizer, criterion,
            project_name=project_name, experiment_name=experiment_name,
            local_model_result_folder_path=local_model_result_folder_path, hyperparams=hyperparams,
            cloud_save_mode=cloud_save_mode, bucket_name=bucket_name, cloud_dir_prefix=cloud_dir_prefix, **kwargs,
        )  # fmt: skip
        self.rm_subopt_local_models = rm_subopt_local_models
        self.num_best_checkpoints_kept = num_best_checkpoints_kept
        self.iteration_save_freq = iteration_save_freq
        self.checkpoint_manager: CheckpointManager | None = None
        self._pending_restore: LoadedCheckpoint | None = None

    @property
    def checkpoint_dir(self) -> Path | None:
        """``<experiment folder>/checkpoint_model``, once ``fit`` has created or found the experiment folder."""
        return None if self.experiment_dir is None else self.experiment_dir / CHECKPOINT_DIR

    def fit(
        self,
        num_epochs: int = 0,
        num_iterations: int = 0,
        callbacks: Sequence[Callback] | None = None,
        grad_accumulation: int = 1,
        *,
        resume_from: str | Path | None = None,
        allow_partial_resume: bool = False,
        allow_resume_changes: bool = False,
    ) -> TTModel | nn.Module:
        """Train with a checkpoint after every epoch; see :meth:`TrainLoop.fit` for the loop itself.

        Args:
            num_epochs, num_iterations, callbacks, grad_accumulation: as for :meth:`TrainLoop.fit`. When resuming
                they are totals: training continues up to epoch ``num_epochs`` (or iteration ``num_iterations``).
            resume_from: ``'latest'`` (the newest committed checkpoint of this project and experiment name under the
                results root), a checkpoint folder, a ``checkpoint_model`` folder or an experiment folder. Training
                continues in that experiment's folder.
            allow_partial_resume: load a checkpoint that lacks some parts (e.g. only the model) instead of failing.
            allow_resume_changes: continue an epoch from a mid-epoch checkpoint although the training loader's batch
                size, dataset length, sampler or ``grad_accumulation`` changed since (refused by default: the
                skipped batches would not be the ones already trained on).

        Raises:
            CheckpointNotFoundError: ``resume_from`` does not exist or holds no valid checkpoint.
            CheckpointIncompatibleError: the checkpoint's model or optimizers (class, param groups) do not match.
            ResumeMismatchError: a mid-epoch checkpoint, and the loader or ``grad_accumulation`` changed (when
                training starts, before the first batch).
        """
        self._validate_fit_args(num_epochs, num_iterations, grad_accumulation)
        if self._will_launch():
            kwargs = {"num_epochs": num_epochs, "num_iterations": num_iterations, "callbacks": callbacks}
            kwargs.update(grad_accumulation=grad_accumulation, resume_from=resume_from)
            kwargs.update(allow_partial_resume=allow_partial_resume, allow_resume_changes=allow_resume_changes)
            return self._launch(self.fit, kwargs)
        self._ensure_distributed()
        if resume_from is not None:
            loaded = self._load_for_resume(resume_from, allow_partial_resume, allow_resume_changes)
            if self.distributed is not None:
                self.distributed.barrier()  # every rank has read the checkpoint before rank 0 writes or prunes
            remaining_epochs = max(0, num_epochs - self.epochs_done) if num_epochs else 0
            remaining_iterations = max(0, num_iterations - self.iteration) if num_iterations else 0
            if not remaining_epochs and not remaining_iterations:
                logger.info(
                    "nothing to train: the checkpoint is after %d epochs, %d iterations",
                    self.epochs_done,
                    self.iteration,
                )
                self._pending_restore = None
                self._after_fit()  # end-of-training work still runs: pending uploads, EndSave evaluation
                return self.model
            num_epochs, num_iterations = remaining_epochs, remaining_iterations
            self._pending_restore = loaded
        self._ensure_experiment_dir()
        assert self.experiment_dir is not None
        uploads = self.cloud_uploads
        self.checkpoint_manager = None
        if self.is_main_process:  # the other ranks only contribute their RNG states to each checkpoint
            self.checkpoint_manager = CheckpointManager(
                self.experiment_dir / CHECKPOINT_DIR,
                **self._retention,
                on_commit=uploads.upload_checkpoint if uploads is not None else None,
                may_delete=uploads.checkpoint_uploaded if uploads is not None else None,  # kept until uploaded
            )
        meta = {
            "project_name": self.project_name,
            "experiment_name": self.experiment_name,
            "variant": type(self).__name__,
        }
        checkpoint: EpochCheckpoint = (
            EpochAndIterationCheckpoint(self.checkpoint_manager, meta, self.iteration_save_freq, self._retention)
            if self.iteration_save_freq
            else EpochCheckpoint(self.checkpoint_manager, meta, self._retention)
        )
        return super().fit(num_epochs, num_iterations, [*(callbacks or []), checkpoint], grad_accumulation)

    def _load_for_resume(self, resume_from: str | Path, allow_partial: bool, allow_changes: bool) -> LoadedCheckpoint:
        ctx = self.distributed
        resolved = self._resolve_resume(resume_from) if ctx is None or ctx.is_main else None
        if ctx is not None:  # rank 0 decides (downloading from the cloud if needed); every rank loads that checkpoint
            resolved = ctx.broadcast(resolved)
        assert resolved is not None
        experiment_dir, info = resolved
        manager = CheckpointManager(experiment_dir / CHECKPOINT_DIR)
        loaded = manager.load(info, required=REQUIRED_PARTS, allow_partial=allow_partial)
        apply_model_and_optimizers(self, loaded, strict=not allow_changes)
        self._attach_experiment(experiment_dir, resumed=True)
        if self.is_main_process:
            logger.info(
                "resuming from %s (epoch %d, iteration %d)", loaded.info.path, loaded.info.epoch, loaded.info.iteration
            )
        return loaded

    def _resolve_resume(self, resume_from: str | Path) -> tuple[Path, Any]:
        """The experiment folder and checkpoint to resume from; ``'latest'`` falls back to the cloud store."""
        root = self.local_model_result_folder_path
        try:
            return resolve_resume(resume_from, root, self.project_name, self.experiment_name)
        except CheckpointNotFoundError:
            if resume_from != "latest" or self.cloud_store is None:
                raise
            downloaded = download_latest_checkpoint(self.cloud_store, root, self.project_name, self.experiment_name)
            if downloaded is None:
                raise CheckpointNotFoundError(
                    f"resume_from='latest' found no checkpoint of project {self.project_name!r}, experiment "
                    f"{self.experiment_name!r} under {root} nor in {self.cloud_store.url(self.cloud_store.key(''))}"
                ) from None
            return resolve_resume(resume_from, root, self.project_name, self.experiment_name)

    def _on_fit_start(self) -> None:
        if self._pending_restore is not None:
            apply_callbacks_and_rng(self, self._pending_restore)
            self._pending_restore = None


class _EndSave:
    """Mixin: after ``fit`` trains, evaluate the result packages and write the experiment folder."""

    val_result_package: AbstractResultPackage | None
    test_result_package: AbstractResultPackage | None
    results: dict[str, dict[str, Any]]

    cloud_uploads: ExperimentUploads | None

    def _after_fit(self) -> None:
        try:
            if self.is_main_process:  # type: ignore[attr-defined]
                self.results = end_save(self, self.val_result_package, self.test_result_package)  # type: ignore[arg-type]
            else:  # the predictions are gathered: take part in the same evaluations, in the same order, write nothing
                end_save_predictions(self, self.val_result_package, self.test_result_package)  # type: ignore[arg-type]
        finally:  # what was saved goes up even when a result package failed
            if self.cloud_uploads is not None:
                self.cloud_uploads.upload_experiment_files()
            super()._after_fit()  # type: ignore[misc]

    def _export_run(self) -> dict[str, Any]:
        return {**super()._export_run(), "results": self.results}  # type: ignore[misc]

    def _import_run(self, result: dict[str, Any]) -> None:
        super()._import_run(result)  # type: ignore[misc]
        self.results = result["results"]


class TrainLoopEndSave(_EndSave, _TrackedTrainLoop):
    """TrainLoop that, at the end of training, evaluates result packages and saves the whole experiment.

    After ``fit`` the experiment folder ``<root>/<project_name>/<experiment_name>_<timestamp>/`` holds ``model/``
    (the final ``state_dict``), ``results/`` (each package's metrics as JSON, predictions as ``.npz``, the training
    history as JSON and CSV), ``hyperparams.json``, ``environment.json``, ``code/`` (the training script),
    ``plots/`` (loss, metrics, confusion matrices) and ``summary.md``. ``tl.results`` holds the metrics too.

    Args:
        val_result_package: evaluated on ``validation_loader`` (e.g. ``ClassificationResultPackage()``).
        test_result_package: evaluated on ``test_loader``. At least one of the two is required.
        Others: as for :class:`TrainLoopCheckpoint` (without the checkpoint options).

    Example:
        .. code-block:: python

            tl = TrainLoopEndSave(model, train_loader, val_loader, test_loader, optimizer, criterion,
                                  project_name="proj", experiment_name="exp", local_model_result_folder_path="runs",
                                  hyperparams={"lr": 1e-3}, val_result_package=ClassificationResultPackage(),
                                  test_result_package=ClassificationResultPackage())
            tl.fit(num_epochs=10)
            tl.results["test"]["accuracy"]
    """

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Any,
        validation_loader: Any,
        test_loader: Any,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        criterion: Callable[..., torch.Tensor] | None,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None = None,
        val_result_package: AbstractResultPackage | None = None,
        test_result_package: AbstractResultPackage | None = None,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        check_result_packages(val_result_package, test_result_package, validation_loader, test_loader)
        super().__init__(
            model, train_loader, validation_loader, test_loader, optimizer, criterion,
            project_name=project_name, experiment_name=experiment_name,
            local_model_result_folder_path=local_model_result_folder_path, hyperparams=hyperparams,
            cloud_save_mode=cloud_save_mode, bucket_name=bucket_name, cloud_dir_prefix=cloud_dir_prefix, **kwargs,
        )  # fmt: skip
        self.val_result_package = val_result_package
        self.test_result_package = test_result_package
        self.results = {}


class TrainLoopCheckpointEndSave(_EndSave, TrainLoopCheckpoint):
    """The most complete tracking: a checkpoint after every epoch (exact resume included) and, at the end, the
    evaluated and saved experiment of :class:`TrainLoopEndSave`.

    Args:
        val_result_package, test_result_package: as for :class:`TrainLoopEndSave` (at least one).
        Others: as for :class:`TrainLoopCheckpoint`.

    Example:
        .. code-block:: python

            tl = TrainLoopCheckpointEndSave(model, train_loader, val_loader, test_loader, optimizer, criterion,
                                            project_name="proj", experiment_name="exp",
                                            local_model_result_folder_path="runs", hyperparams={"lr": 1e-3},
                                            val_result_package=ClassificationResultPackage(),
                                            test_result_package=ClassificationResultPackage())
            tl.fit(num_epochs=10)                       # or, after a crash: tl.fit(num_epochs=10, resume_from="latest")
    """

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Any,
        validation_loader: Any,
        test_loader: Any,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        criterion: Callable[..., torch.Tensor] | None,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None = None,
        val_result_package: AbstractResultPackage | None = None,
        test_result_package: AbstractResultPackage | None = None,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        check_result_packages(val_result_package, test_result_package, validation_loader, test_loader)
        super().__init__(
            model, train_loader, validation_loader, test_loader, optimizer, criterion, project_name,
            experiment_name, local_model_result_folder_path, hyperparams, cloud_save_mode, bucket_name,
            cloud_dir_prefix, **kwargs,
        )  # fmt: skip
        self.val_result_package = val_result_package
        self.test_result_package = test_result_package
        self.results = {}
