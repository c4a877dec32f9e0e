"""``TorchMetricsPackage``: a result package over a `torchmetrics <https://lightning.ai/docs/torchmetrics>`_ metric or
``MetricCollection`` (the original AIToolbox class). Needs ``torchmetrics`` (and so torch), imported by the caller:
this module imports neither."""

from __future__ import annotations

from typing import Any

from aitoolbox.experiment.result_package.abstract import AbstractResultPackage

__all__ = ["TorchMetricsPackage"]


def _number(value: Any) -> Any:
    """A 0-d tensor as a Python number; other values unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class TorchMetricsPackage(AbstractResultPackage):
    """Evaluate ``torch_metrics(y_predicted, y_true)``; results are named ``<metric>_PTLMetrics`` (the original's).

    Args:
        torch_metrics: a ``torchmetrics.Metric`` or ``torchmetrics.MetricCollection``.

    Example:
        .. code-block:: python

            import torchmetrics
            pkg = TorchMetricsPackage(torchmetrics.Accuracy(task="multiclass", num_classes=10))
            tl.fit(num_epochs=5, callbacks=[ModelPerformanceEvaluation(pkg, {})])
            tl.train_history["val_MulticlassAccuracy_PTLMetrics"]
    """

    def __init__(self, torch_metrics: Any) -> None:
        if not callable(torch_metrics) or not hasattr(torch_metrics, "reset"):
            raise TypeError(f"torch_metrics must be a torchmetrics Metric or MetricCollection, got {torch_metrics!r}")
        super().__init__(pkg_name="Torch Metrics", np_array=False)
        self.metric = torch_metrics

    def prepare_results_dict(self) -> dict[str, Any]:
        result = self.metric(self.y_predicted, self.y_true)
        if not isinstance(result, dict):
            result = {type(self.metric).__name__: result}
        return {f"{name}_PTLMetrics": _number(value) for name, value in result.items()}

    def metric_compute(self) -> Any:
        return self.metric.compute()

    def metric_reset(self) -> None:
        self.metric.reset()
