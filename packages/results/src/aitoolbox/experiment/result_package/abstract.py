"""The result-package contract: a named set of metrics computed from ``(y_true, y_pred)`` without side effects."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from aitoolbox.experiment._arrays import check_pair, plain
from aitoolbox.experiment.errors import ResultPackageError

__all__ = ["AbstractResultPackage", "CombinedResultPackage"]


class AbstractResultPackage(abc.ABC):
    """Computes metrics from targets and predictions. Evaluating never changes the package.

    Subclasses implement :meth:`compute` on checked NumPy arrays and list their metric names in ``METRICS``;
    ``metrics=[...]`` selects a subset. Scalar results (floats) are what per-epoch evaluation puts in the training
    history as ``val_<name>`` / ``train_<name>``; others (confusion matrix, per-class report) go to the result files.

    Args:
        metrics: the metric names to compute (default: all of ``METRICS``).
        pkg_name: a name used in file names and summaries.

    Example:
        >>> from aitoolbox.experiment.result_package.basic_packages import RegressionResultPackage
        >>> pkg = RegressionResultPackage(metrics=["mse", "mae"])
        >>> pkg.evaluate([1.0, 2.0], [1.0, 4.0])
        {'mse': 2.0, 'mae': 1.0}
    """

    METRICS: tuple[str, ...] = ()

    def __init__(self, metrics: Sequence[str] | None = None, pkg_name: str | None = None) -> None:
        if metrics is not None:
            if isinstance(metrics, str):
                metrics = [metrics]
            unknown = [m for m in metrics if m not in self.METRICS]
            if unknown:
                raise ResultPackageError(
                    f"{type(self).__name__} has no metrics {unknown}; choose from {list(self.METRICS)}"
                )
            if not metrics:
                raise ResultPackageError(f"metrics is empty; choose from {list(self.METRICS)} or pass None for all")
        self.metrics: tuple[str, ...] = tuple(metrics) if metrics is not None else self.METRICS
        self.pkg_name = pkg_name or type(self).__name__

    def evaluate(self, y_true: Any, y_pred: Any) -> dict[str, Any]:
        """Check the inputs and return ``{metric: value}`` as plain (JSON-ready) Python values."""
        t, p = check_pair(y_true, y_pred)
        results = self.compute(t, p)
        return {name: plain(results[name]) for name in self.metrics if name in results}

    @abc.abstractmethod
    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        """Return every metric this package computes, from checked arrays with the same number of rows."""

    def __add__(self, other: AbstractResultPackage) -> CombinedResultPackage:
        if not isinstance(other, AbstractResultPackage):
            return NotImplemented
        return CombinedResultPackage([self, other])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(metrics={list(self.metrics)})"


class CombinedResultPackage(AbstractResultPackage):
    """The union of several packages' results (``pkg_a + pkg_b``). A name computed by two packages is an error."""

    def __init__(self, packages: Sequence[AbstractResultPackage]) -> None:
        flat: list[AbstractResultPackage] = []
        for pkg in packages:
            flat.extend(pkg.packages if isinstance(pkg, CombinedResultPackage) else [pkg])
        self.packages: list[AbstractResultPackage] = flat
        names = [m for pkg in flat for m in pkg.metrics]
        clashes = sorted({m for m in names if names.count(m) > 1})
        if clashes:
            raise ResultPackageError(f"combined packages both compute {clashes}; select distinct metrics with metrics=")
        self.METRICS = tuple(names)
        super().__init__(None, pkg_name="+".join(p.pkg_name for p in flat))

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pkg in self.packages:
            out.update(pkg.evaluate(y_true, y_pred))
        return out
