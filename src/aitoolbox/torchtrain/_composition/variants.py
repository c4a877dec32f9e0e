"""The tracked TrainLoop variants, each a :class:`~aitoolbox.loop.TrainLoop` composed with extensions: the experiment
folder, its cloud mirror, checkpointing (with exact resume) and the end-of-training save."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from aitoolbox.checkpointing import CheckpointManager
from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import TrainLoop, TTModel
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.extensions import LoopExtension
from aitoolbox.torchtrain._composition.checkpointing import Checkpointing
from aitoolbox.torchtrain._composition.cloud import CloudMirror, cloud_settings
from aitoolbox.torchtrain._composition.end_save import EndSave
from aitoolbox.torchtrain._composition.experiment import CHECKPOINT_DIR, ExperimentFolder
from aitoolbox.torchtrain._composition.retention import Retention

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from aitoolbox.cloud.settings import CloudSettings
    from aitoolbox.loop.extensions import LoopOptions

__all__ = ["TrainLoopCheckpoint", "TrainLoopCheckpointEndSave", "TrainLoopEndSave"]

Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer]
Criterion = Callable[..., torch.Tensor] | None


def _tracking(
    project_name: str,
    experiment_name: str,
    root: str | Path,
    hyperparams: Mapping[str, Any] | None,
    cloud: CloudSettings,
    source_dirs: Sequence[str | Path] = (),
    redact: bool = True,
) -> tuple[ExperimentFolder, CloudMirror]:
    folder = ExperimentFolder(project_name, experiment_name, root, hyperparams, source_dirs, redact=redact)
    return folder, CloudMirror(cloud, folder)


class _Tracked(TrainLoop):
    """The attributes the tracked variants share, read from their extensions."""

    _folder: ExperimentFolder
    _mirror: CloudMirror
    _end: EndSave | None = None

    experiment_dir = property(lambda self: self._folder.path, doc="The experiment folder, once ``fit`` made it.")
    project_name = property(lambda self: self._folder.project_name)
    experiment_name = property(lambda self: self._folder.experiment_name)
    hyperparams = property(lambda self: self._folder.hyperparams)
    local_model_result_folder_path = property(
        lambda self: str(self._folder.root), doc="The results root, a string (``+ '/sub'`` works, as in the original)."
    )
    redact_secrets = property(lambda self: self._folder.redact, doc="Whether secrets are redacted in what is written.")
    cloud_store = property(lambda self: self._mirror.store, doc="The bucket (``S3Store``) where this rank uploads.")
    upload_report = property(lambda self: self._mirror.report, doc="The last upload summary, in cloud modes.")
    results = property(lambda self: {} if self._end is None else self._end.results, doc="EndSave metrics by split.")


class TrainLoopCheckpoint(_Tracked):
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
        source_dirs: folders of source code zipped into the experiment's ``code/`` (``code/<folder>.zip``) when
            training starts, beside the copy of the running script.
        redact_secrets: write ``"***"`` for the values of secret-looking hyperparameters (``hf_token``,
            ``db_password``, ``wandb_api_key``...) and command-line options, and for the credentials in URLs, in
            ``hyperparams.json``, ``environment.json`` and ``summary.md`` (so in the bucket too); the rule is
            :mod:`aitoolbox.experiment.redact`'s. ``False`` writes them as given.
        extensions: more :class:`~aitoolbox.loop.extensions.LoopExtension` objects, run after the built-in ones.
        **loop_options: the keyword options of :class:`TrainLoop` (``device``, ``use_amp``, ...: ``LoopOptions``).
            ``preemption`` is on here: on SIGTERM/SIGUSR1/SIGINT training stops at the next optimizer-step boundary,
            a checkpoint is committed and uploaded first, and ``fit`` raises
            :class:`~aitoolbox.loop.preemption.Preempted` (exit code 143); ``preemption=Preemption(grace_s=120,
            exit_code=...)`` changes the grace period and the code, ``preemption=False`` turns it off.

    Example:
        .. code-block:: python

            tl = TrainLoopCheckpoint(model, train_loader, val_loader, None, optimizer, criterion,
                                     project_name="proj", experiment_name="exp", local_model_result_folder_path="runs",
                                     hyperparams={"lr": 1e-3})
            tl.fit(num_epochs=10)
            # after a crash, in a new process with the same model/optimizer/loaders:
            tl.fit(num_epochs=10, resume_from="latest")
    """

    preemption_default = True

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Any,
        validation_loader: Any,
        test_loader: Any,
        optimizer: Optimizers,
        criterion: Criterion,
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
        cloud_options: Mapping[str, Any] | None = None,
        source_dirs: Sequence[str | Path] = (),
        redact_secrets: bool = True,
        extensions: Sequence[LoopExtension[TrainLoop]] = (),
        **loop_options: Unpack[LoopOptions],
    ) -> None:
        retention = Retention(rm_subopt_local_models, num_best_checkpoints_kept, rm_subopt_mode)
        cloud = cloud_settings(cloud_save_mode, bucket_name, cloud_dir_prefix, cloud_options)
        self._folder, self._mirror = _tracking(
            project_name,
            experiment_name,
            local_model_result_folder_path,
            hyperparams,
            cloud,
            source_dirs,
            redact_secrets,
        )
        self._checkpointing = Checkpointing(self._folder, self._mirror, retention, iteration_save_freq)
        super().__init__(
            model=model,
            train_loader=train_loader,
            validation_loader=validation_loader,
            test_loader=test_loader,
            optimizer=optimizer,
            criterion=criterion,
            extensions=[self._folder, self._checkpointing, self._mirror, *extensions],
            **loop_options,
        )
        self.rm_subopt_local_models = rm_subopt_local_models
        self.num_best_checkpoints_kept = num_best_checkpoints_kept
        self.iteration_save_freq = iteration_save_freq
        self.cloud_save_mode, self.bucket_name, self.cloud_dir_prefix = cloud_save_mode, bucket_name, cloud_dir_prefix

    @property
    def checkpoint_dir(self) -> Path | None:
        """``<experiment folder>/checkpoint_model``, once ``fit`` has created or found the experiment folder."""
        return None if self.experiment_dir is None else self.experiment_dir / CHECKPOINT_DIR

    @property
    def checkpoint_manager(self) -> CheckpointManager | None:
        """The manager committing this run's checkpoints (rank 0, from the start of training)."""
        return self._checkpointing.manager

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
        allow_non_finite_resume: bool = False,
        **options: Any,
    ) -> TTModel | nn.Module:
        """Train with a checkpoint after every epoch; see :meth:`TrainLoop.fit` for the loop itself.

        Args:
            num_epochs, num_iterations, callbacks, grad_accumulation: as for :meth:`TrainLoop.fit`. When resuming
                they are totals: training continues up to epoch ``num_epochs`` (or iteration ``num_iterations``).
            resume_from: ``'auto'``: the newest checkpoint of this project and experiment name if there is one
                (else a new run, said in one log line): the same command for a first launch and every requeue.
                ``'latest'``: that newest checkpoint (locally, else in the bucket), which must exist. Or a checkpoint
                folder, a ``checkpoint_model`` folder or an experiment folder. Training continues in that
                experiment's folder, up to ``num_epochs`` (or ``num_iterations``) counted from the run's start.
            allow_partial_resume: load a checkpoint that lacks some parts (e.g. only the model) instead of failing.
            **options: the fit options of extensions given with ``extensions=``.
            allow_resume_changes: continue an epoch from a mid-epoch checkpoint although the training loader's batch
                size, dataset length, sampler or ``grad_accumulation`` changed since (refused by default: the
                skipped batches would not be the ones already trained on).
            allow_non_finite_resume: resume from a checkpoint whose weights or optimizer state hold a NaN or an
                infinity (refused by default; such checkpoints are never committed by this loop).

        Raises:
            CheckpointNotFoundError: ``resume_from`` does not exist or holds no valid checkpoint.
            CheckpointIncompatibleError: the checkpoint's model or optimizers (class, param groups) do not match, or
                its weights are not finite (see ``allow_non_finite_resume``).
            ResumeMismatchError: a mid-epoch checkpoint, and the loader or ``grad_accumulation`` changed (when
                training starts, before the first batch).
        """
        return super().fit(
            num_epochs,
            num_iterations,
            callbacks,
            grad_accumulation,
            resume_from=resume_from,
            allow_partial_resume=allow_partial_resume,
            allow_resume_changes=allow_resume_changes,
            allow_non_finite_resume=allow_non_finite_resume,
            **options,
        )


class TrainLoopEndSave(_Tracked):
    """TrainLoop that, at the end of training, evaluates result packages and saves the whole experiment.

    After ``fit`` the experiment folder ``<root>/<project_name>/<experiment_name>_<timestamp>/`` holds ``model/``
    (the final ``state_dict``), ``results/`` (each package's metrics as JSON, predictions as ``.npz``, the training
    history as JSON and CSV), ``hyperparams.json``, ``environment.json``, ``code/`` (the training script),
    ``plots/`` (loss, metrics, confusion matrices) and ``summary.md``. ``tl.results`` holds the metrics too.

    Args:
        val_result_package: evaluated on ``validation_loader`` (e.g. ``ClassificationResultPackage()``).
        test_result_package: evaluated on ``test_loader``. At least one of the two is required.
        Others: as for :class:`TrainLoopCheckpoint` (without the checkpoint options); ``preemption`` is off by
            default here (there is no checkpoint to commit): when on, ``fit`` stops at a step boundary and raises
            ``Preempted`` without the end-of-training evaluation.

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
        optimizer: Optimizers,
        criterion: Criterion,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None = None,
        val_result_package: AbstractResultPackage | None = None,
        test_result_package: AbstractResultPackage | None = None,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        *,
        cloud_options: Mapping[str, Any] | None = None,
        source_dirs: Sequence[str | Path] = (),
        redact_secrets: bool = True,
        extensions: Sequence[LoopExtension[TrainLoop]] = (),
        **loop_options: Unpack[LoopOptions],
    ) -> None:
        self._end = EndSave(val_result_package, test_result_package, validation_loader, test_loader)
        cloud = cloud_settings(cloud_save_mode, bucket_name, cloud_dir_prefix, cloud_options)
        self._folder, self._mirror = _tracking(
            project_name,
            experiment_name,
            local_model_result_folder_path,
            hyperparams,
            cloud,
            source_dirs,
            redact_secrets,
        )
        super().__init__(
            model=model,
            train_loader=train_loader,
            validation_loader=validation_loader,
            test_loader=test_loader,
            optimizer=optimizer,
            criterion=criterion,
            extensions=[self._folder, self._mirror, self._end, *extensions],
            **loop_options,
        )
        self.val_result_package, self.test_result_package = val_result_package, test_result_package
        self.cloud_save_mode, self.bucket_name, self.cloud_dir_prefix = cloud_save_mode, bucket_name, cloud_dir_prefix


class TrainLoopCheckpointEndSave(TrainLoopCheckpoint):
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
        optimizer: Optimizers,
        criterion: Criterion,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        hyperparams: Mapping[str, Any] | None = None,
        val_result_package: AbstractResultPackage | None = None,
        test_result_package: AbstractResultPackage | None = None,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        *,
        rm_subopt_local_models: bool | str = False,
        num_best_checkpoints_kept: int | None = None,
        iteration_save_freq: int = 0,
        rm_subopt_mode: str = "auto",
        cloud_options: Mapping[str, Any] | None = None,
        source_dirs: Sequence[str | Path] = (),
        redact_secrets: bool = True,
        extensions: Sequence[LoopExtension[TrainLoop]] = (),
        **loop_options: Unpack[LoopOptions],
    ) -> None:
        end_save = EndSave(val_result_package, test_result_package, validation_loader, test_loader)
        self._end = end_save
        super().__init__(
            model=model,
            train_loader=train_loader,
            validation_loader=validation_loader,
            test_loader=test_loader,
            optimizer=optimizer,
            criterion=criterion,
            project_name=project_name,
            experiment_name=experiment_name,
            local_model_result_folder_path=local_model_result_folder_path,
            hyperparams=hyperparams,
            cloud_save_mode=cloud_save_mode,
            bucket_name=bucket_name,
            cloud_dir_prefix=cloud_dir_prefix,
            rm_subopt_local_models=rm_subopt_local_models,
            num_best_checkpoints_kept=num_best_checkpoints_kept,
            iteration_save_freq=iteration_save_freq,
            rm_subopt_mode=rm_subopt_mode,
            cloud_options=cloud_options,
            source_dirs=source_dirs,
            redact_secrets=redact_secrets,
            extensions=[end_save, *extensions],
            **loop_options,
        )
        self.val_result_package, self.test_result_package = val_result_package, test_result_package
