"""Ready-made result packages: classification, binary classification, regression and user-defined metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aitoolbox.experiment._arrays import class_labels
from aitoolbox.experiment.errors import ResultPackageError
from aitoolbox.experiment.result_package.abstract import AbstractResultPackage

__all__ = [
    "BinaryClassificationResultPackage",
    "ClassificationResultPackage",
    "GeneralResultPackage",
    "RegressionResultPackage",
]


class ClassificationResultPackage(AbstractResultPackage):
    """Multi-class metrics: accuracy, balanced accuracy, macro and weighted precision/recall/F1, confusion matrix,
    and scikit-learn's per-class report.

    ``y_pred`` may be class indices ``(n,)`` or scores ``(n, classes)`` (probabilities or logits: the argmax is
    taken); ``y_true`` class indices or one-hot rows.

    Example:
        >>> pkg = ClassificationResultPackage(metrics=["accuracy", "f1_macro"])
        >>> pkg.evaluate([0, 1, 1, 2], [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.0, 0.1, 0.9]])
        {'accuracy': 0.75, 'f1_macro': 0.7777777777777777}
    """

    METRICS = (
        "accuracy",
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "confusion_matrix",
        "classification_report",
    )

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        from sklearn import metrics as skm  # lazy: scikit-learn takes ~0.5 s to import

        t, p = class_labels(y_true, "y_true"), class_labels(y_pred, "y_pred")
        labels = np.union1d(t, p)
        out: dict[str, Any] = {
            "accuracy": float(skm.accuracy_score(t, p)),
            "balanced_accuracy": float(_quiet(skm.balanced_accuracy_score, t, p)),
            # one class only (a tiny split) is a valid 1x1 matrix; scikit-learn warns about it
            "confusion_matrix": _quiet(skm.confusion_matrix, t, p, labels=labels).tolist(),
            "classification_report": skm.classification_report(t, p, output_dict=True, zero_division=0),
        }
        for avg in ("macro", "weighted"):
            prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, average=avg, zero_division=0)
            out.update({f"precision_{avg}": float(prec), f"recall_{avg}": float(rec), f"f1_{avg}": float(f1)})
        return out


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": the score is still defined
        return fn(*args, **kwargs)


class BinaryClassificationResultPackage(AbstractResultPackage):
    """Binary metrics: those of :class:`ClassificationResultPackage` plus ROC-AUC and PR-AUC (average precision).

    ``y_pred`` may be positive-class probabilities ``(n,)`` (thresholded at ``threshold``), logits ``(n,)`` (any value
    outside [0, 1]: thresholded at 0 after a sigmoid), hard labels, or two-column scores ``(n, 2)``.

    Args:
        threshold: the probability at or above which a prediction counts as positive (``positive_class_thresh``:
            the original's name).

    Example:
        >>> pkg = BinaryClassificationResultPackage(metrics=["accuracy", "roc_auc"])
        >>> pkg.evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
        {'accuracy': 0.5, 'roc_auc': 0.75}
    """

    METRICS = (*ClassificationResultPackage.METRICS, "roc_auc", "pr_auc")

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        threshold: float = 0.5,
        pkg_name: str | None = None,
        *,
        positive_class_thresh: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(metrics, pkg_name, **kwargs)
        threshold = threshold if positive_class_thresh is None else positive_class_thresh  # the original's name
        if not 0.0 < threshold < 1.0:
            raise ResultPackageError(f"threshold must be between 0 and 1, got {threshold!r}")
        self.threshold = threshold

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        from sklearn import metrics as skm

        t = class_labels(y_true, "y_true")
        if set(np.unique(t).tolist()) - {0, 1}:
            raise ResultPackageError(f"binary y_true must hold 0 and 1 only, got classes {np.unique(t).tolist()}")
        if y_pred.ndim == 2 and y_pred.shape[1] == 2:
            scores = y_pred[:, 1] - y_pred[:, 0]  # rank-equivalent to the positive class probability
            labels = (scores > 0).astype(np.int64)
        elif y_pred.ndim == 1 or (y_pred.ndim == 2 and y_pred.shape[1] == 1):
            scores = y_pred.reshape(-1).astype(np.float64)
            if scores.min() < 0 or scores.max() > 1:
                scores = 1 / (1 + np.exp(-scores))  # logits
            labels = (scores >= self.threshold).astype(np.int64)
        else:
            raise ResultPackageError(f"binary y_pred must be (n,) or (n, 2), got shape {y_pred.shape}")
        out = ClassificationResultPackage().compute(t, labels)
        both_classes = len(np.unique(t)) == 2
        out["roc_auc"] = float(skm.roc_auc_score(t, scores)) if both_classes else float("nan")
        out["pr_auc"] = float(skm.average_precision_score(t, scores)) if both_classes else float("nan")
        return out


class RegressionResultPackage(AbstractResultPackage):
    """Regression metrics: MSE, RMSE, MAE and R2 (averaged over outputs for multi-output targets).

    Example:
        >>> RegressionResultPackage().evaluate([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])["rmse"]
        0.5773502691896257
    """

    METRICS = ("mse", "rmse", "mae", "r2")

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        from sklearn import metrics as skm

        t, p = y_true.astype(np.float64), y_pred.astype(np.float64)
        if t.shape != p.shape:
            if t.size == p.size:
                t, p = t.reshape(len(t), -1), p.reshape(len(p), -1)
            else:
                raise ResultPackageError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
        mse = float(skm.mean_squared_error(t, p))
        return {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(skm.mean_absolute_error(t, p)),
            "r2": float(skm.r2_score(t, p)) if len(t) > 1 else float("nan"),
        }


class GeneralResultPackage(AbstractResultPackage):
    """The user's own metrics: ``{name: fn(y_true, y_pred)}`` (or a list of functions, named by ``__name__``).

    Each function gets NumPy arrays and returns a number (or any JSON-ready value).

    Example:
        >>> import numpy as np
        >>> def max_error(t, p):
        ...     return float(np.max(np.abs(t - p)))
        >>> GeneralResultPackage([max_error]).evaluate([1.0, 2.0], [1.5, 2.0])
        {'max_error': 0.5}
    """

    def __init__(
        self,
        metric_fns: Mapping[str, Callable[[np.ndarray, np.ndarray], Any]]
        | Sequence[Callable[[np.ndarray, np.ndarray], Any]],
        pkg_name: str | None = None,
    ) -> None:
        fns = dict(metric_fns) if isinstance(metric_fns, Mapping) else {f.__name__: f for f in metric_fns}
        if not fns:
            raise ResultPackageError("GeneralResultPackage needs at least one metric function")
        for name, fn in fns.items():
            if not callable(fn):
                raise ResultPackageError(f"metric {name!r} is {type(fn).__name__}, not a function (y_true, y_pred)")
        self.metric_fns = fns
        self.METRICS = tuple(fns)
        super().__init__(None, pkg_name)

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        return {name: fn(y_true, y_pred) for name, fn in self.metric_fns.items()}
