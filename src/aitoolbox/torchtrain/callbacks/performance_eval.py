"""Per-epoch evaluation of a result package, recorded in the training history (the original's module path)."""

from __future__ import annotations

import logging

from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Callback

__all__ = ["ModelPerformanceEvaluation"]

logger = logging.getLogger(__name__)


class ModelPerformanceEvaluation(Callback):
    """At every epoch end, evaluate ``result_package`` and add ``val_<metric>`` / ``train_<metric>`` to the history.

    Only scalar metrics go into the history (the confusion matrix and per-class report do not), so
    :class:`~aitoolbox.loop.callbacks.EarlyStopping` and checkpoint ranking can monitor e.g. ``'val_accuracy'``. It runs
    before the other epoch-end callbacks (``execution_order=-100``).

    Args:
        result_package: e.g. ``ClassificationResultPackage()``; the same instance serves both sets (it keeps no state).
        on_train_data: also evaluate on the training loader (a full extra pass per epoch).
        on_val_data: evaluate on the validation loader.

    Example:
        .. code-block:: python

            tl.fit(num_epochs=20, callbacks=[
                ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy", "f1_macro"])),
                EarlyStopping(monitor="val_accuracy", patience=3),
            ])
    """

    def __init__(
        self, result_package: AbstractResultPackage, on_train_data: bool = False, on_val_data: bool = True
    ) -> None:
        super().__init__(execution_order=-100)
        if not isinstance(result_package, AbstractResultPackage):
            raise LoopConfigError(f"result_package must be a result package instance, got {result_package!r}")
        if not on_train_data and not on_val_data:
            raise LoopConfigError("ModelPerformanceEvaluation needs on_train_data=True or on_val_data=True")
        self.result_package = result_package
        self.on_train_data = on_train_data
        self.on_val_data = on_val_data

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        if self.on_val_data and tl.validation_loader is None:
            raise LoopConfigError(
                "ModelPerformanceEvaluation(on_val_data=True) needs a validation_loader; pass one to the TrainLoop"
            )

    def provided_metrics(self) -> tuple[str, ...]:
        prefixes = [p for p, on in (("train", self.on_train_data), ("val", self.on_val_data)) if on]
        return tuple(f"{prefix}_{name}" for prefix in prefixes for name in self.result_package.metrics)

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        assert tl is not None
        splits = [("train", tl.predict_on_train_set)] if self.on_train_data else []
        if self.on_val_data:
            splits.append(("val", tl.predict_on_validation_set))
        for prefix, predict in splits:
            y_pred, y_true, _ = predict()
            for name, value in self.result_package.evaluate(y_true, y_pred).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    tl.train_history.insert_single_result_into_history(f"{prefix}_{name}", float(value))
