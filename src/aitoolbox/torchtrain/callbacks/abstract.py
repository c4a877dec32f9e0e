"""The callback base classes, under the original AIToolbox module path."""

from __future__ import annotations

from pathlib import Path

from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import AbstractCallback, Callback

__all__ = ["AbstractCallback", "AbstractExperimentCallback", "Callback"]

_DETAILS = ("project_name", "experiment_name", "local_model_result_folder_path")
_CLOUD = ("cloud_save_mode", "bucket_name", "cloud_dir_prefix")


class AbstractExperimentCallback(Callback):
    """A callback that writes into an experiment folder: the tracked variant's, or one named by its arguments.

    With a tracked ``TrainLoop*`` variant the details are taken from the loop (:meth:`try_infer_experiment_details`),
    and what the callback writes lands in the experiment folder, uploaded with it in the cloud modes. With a plain
    ``TrainLoop`` give ``project_name``, ``experiment_name`` and ``local_model_result_folder_path``.
    """

    def __init__(
        self,
        callback_name: str | None = None,
        project_name: str | None = None,
        experiment_name: str | None = None,
        local_model_result_folder_path: str | Path | None = None,
        cloud_save_mode: str | None = None,
        bucket_name: str | None = None,
        cloud_dir_prefix: str | None = None,
        execution_order: int = 0,
        device_idx_execution: int | None = None,
    ) -> None:
        super().__init__(callback_name, execution_order, device_idx_execution)
        self.project_name, self.experiment_name = project_name, experiment_name
        self.local_model_result_folder_path = local_model_result_folder_path
        self.cloud_save_mode, self.bucket_name, self.cloud_dir_prefix = cloud_save_mode, bucket_name, cloud_dir_prefix
        self._made_dir: Path | None = None  # with a plain TrainLoop: the folder made from the details

    def try_infer_experiment_details(self, infer_cloud_details: bool) -> None:
        """Fill the details left ``None`` from the loop (a tracked variant has them); refuse when still missing."""
        tl = self.train_loop_obj
        names = _DETAILS + (_CLOUD if infer_cloud_details else ())
        for name in names:
            if getattr(self, name) is None and hasattr(tl, name):
                setattr(self, name, getattr(tl, name))
        missing = [n for n in _DETAILS if getattr(self, n) is None]
        if missing:
            raise LoopConfigError(
                f"{type(self).__name__} needs {missing}: pass them to the callback, or use a tracked variant "
                "(TrainLoopCheckpointEndSave...) whose experiment folder it writes into"
            )

    def experiment_dir(self) -> Path:
        """The folder this callback writes into: the loop's experiment folder, else one made from the details."""
        tl = self.train_loop_obj
        folder = getattr(tl, "experiment_dir", None)
        if folder is not None:
            return Path(folder)
        if self._made_dir is None:
            from aitoolbox.torchtrain._composition.experiment import new_experiment_dir, prepare_root, validate_names

            self.try_infer_experiment_details(infer_cloud_details=False)
            validate_names(self.project_name, self.experiment_name)
            root = prepare_root(self.local_model_result_folder_path)
            self._made_dir = new_experiment_dir(root, str(self.project_name), str(self.experiment_name))
        return self._made_dir
