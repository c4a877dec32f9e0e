"""``PyTorchModelPredictor`` of the original AIToolbox: predict, get the loss, evaluate a result package, and write
the evaluation into an experiment folder, for a trained model and one DataLoader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aitoolbox.experiment import ExperimentWriter
from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.predict import ModelPredictor
from aitoolbox.torchtrain._composition.experiment import new_experiment_dir, prepare_root, validate_names

__all__ = ["PyTorchModelPredictor"]


class PyTorchModelPredictor(ModelPredictor):
    """:class:`~aitoolbox.loop.predict.ModelPredictor` with the original's result-package methods.

    Args:
        model, data_loader: the trained model and the batches to evaluate on.
        callbacks: accepted for the original's signature only when empty (there is no loop to call them from).
        device, use_amp: as for :class:`~aitoolbox.loop.predict.ModelPredictor`.
    """

    def __init__(self, model: Any, data_loader: Any, callbacks: Any = None, **options: Any) -> None:
        if callbacks:
            raise LoopConfigError(
                "PyTorchModelPredictor runs no loop, so it calls no callbacks; use "
                "TrainLoop.predict_on_test_set(execute_callbacks=True) for on_after_batch_prediction callbacks"
            )
        super().__init__(model, data_loader, **options)
        self.experiment_timestamp = time.strftime("%Y-%m-%d_%H-%M-%S")

    def evaluate_result_package(
        self, result_package: AbstractResultPackage, return_result_package: bool = True
    ) -> AbstractResultPackage | dict[str, Any] | None:
        """Evaluate ``result_package`` on the predictions; the package (``True``) or its results."""
        self._evaluate(result_package)
        return result_package if return_result_package else result_package.get_results()

    def _evaluate(self, result_package: AbstractResultPackage) -> tuple[Any, Any, dict[str, Any] | None]:
        """Predict, evaluate ``result_package`` on it, and return the predictions."""
        y_pred, y_true, metadata = self.model_predict()
        result_package.prepare_result_package(y_true, y_pred, hyperparameters={}, additional_results=metadata)
        return y_pred, y_true, metadata

    def evaluate_model(
        self,
        result_package: AbstractResultPackage,
        project_name: str,
        experiment_name: str,
        local_model_result_folder_path: str | Path,
        cloud_save_mode: str | None = "local",
        bucket_name: str | None = None,
        cloud_dir_prefix: str = "",
        save_true_pred_labels: bool = False,
    ) -> Path:
        """Evaluate ``result_package`` and write ``results/<package>_results.json`` (with the predictions as
        ``.npz`` when ``save_true_pred_labels``) into a new ``<root>/<project>/<experiment>_<timestamp>/``.

        Returns the experiment folder. Only local saving: upload the folder yourself, or evaluate in a tracked
        ``TrainLoop*EndSave`` variant, which mirrors it to S3.
        """
        if cloud_save_mode not in (None, "local"):
            raise LoopConfigError(
                f"PyTorchModelPredictor.evaluate_model saves locally only (cloud_save_mode={cloud_save_mode!r}); "
                "evaluate with a TrainLoopEndSave variant and cloud_save_mode='s3' to have it uploaded"
            )
        validate_names(project_name, experiment_name)
        folder = new_experiment_dir(prepare_root(local_model_result_folder_path), project_name, experiment_name)
        y_pred, y_true, metadata = self._evaluate(result_package)
        writer = ExperimentWriter(folder)
        writer.write_results(result_package.pkg_name, result_package.get_results() or {})
        if save_true_pred_labels:
            writer.write_predictions(result_package.pkg_name, y_true, y_pred, metadata)
        return folder
