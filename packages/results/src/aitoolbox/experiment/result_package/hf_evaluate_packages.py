"""``HFEvaluateResultPackage``: a result package over a `Hugging Face Evaluate <https://huggingface.co/docs/evaluate>`_
metric (the original AIToolbox class). The metric object comes from the caller (``evaluate.load(...)``, or anything
with ``compute(references=, predictions=, **inputs)``): this module imports nothing of ``evaluate``."""

from __future__ import annotations

from typing import Any

from aitoolbox.experiment.result_package.abstract import AbstractResultPackage

__all__ = ["HFEvaluateResultPackage"]


class HFEvaluateResultPackage(AbstractResultPackage):
    """Evaluate ``hf_evaluate_metric.compute(references=y_true, predictions=y_predicted, **inputs)``; the results are
    named ``<name>_HFEvaluate`` (the original's).

    Args:
        hf_evaluate_metric: an ``evaluate.EvaluationModule`` (or any object with that ``compute``).
        use_models_additional_results: also pass the model's metadata (the third value ``get_predictions`` returns)
            as inputs of ``compute``.
        **kwargs: more inputs of ``compute`` known up front (e.g. ``average='macro'``).

    Example:
        .. code-block:: python

            import evaluate
            pkg = HFEvaluateResultPackage(evaluate.load("f1"), use_models_additional_results=False, average="macro")
            tl.fit(num_epochs=5, callbacks=[ModelPerformanceEvaluation(pkg, {})])
            tl.train_history["val_f1_HFEvaluate"]
    """

    def __init__(self, hf_evaluate_metric: Any, use_models_additional_results: bool = True, **kwargs: Any) -> None:
        if not callable(getattr(hf_evaluate_metric, "compute", None)):
            raise TypeError(
                f"hf_evaluate_metric must be a Hugging Face Evaluate metric (evaluate.load(...)), got "
                f"{hf_evaluate_metric!r}: it has no compute()"
            )
        super().__init__(pkg_name="HuggingFace Evaluate metrics")
        self.metric = hf_evaluate_metric
        self.use_models_additional_results = use_models_additional_results
        self.additional_metric_parameters = kwargs

    def prepare_results_dict(self) -> Any:
        inputs = dict(self.additional_metric_parameters)
        if self.use_models_additional_results:
            inputs.update((self.additional_results or {}).get("additional_results") or {})
        result = self.metric.compute(references=self.y_true, predictions=self.y_predicted, **inputs)
        if isinstance(result, dict):
            return {f"{name}_HFEvaluate": value for name, value in result.items()}
        return result
