"""The result-package contract: a named set of metrics computed from ``(y_true, y_pred)``.

Two ways to write a package, both fully supported:

- this project's: list ``METRICS`` and implement :meth:`AbstractResultPackage.compute` on checked NumPy arrays;
  :meth:`~AbstractResultPackage.evaluate` returns the results and never changes the package;
- the original AIToolbox's: implement ``prepare_results_dict()`` reading ``self.y_true`` / ``self.y_predicted``;
  :meth:`~AbstractResultPackage.prepare_result_package` fills them and ``get_results()`` returns the dict.

Every package answers both APIs, so a package written for the original works in ``ModelPerformanceEvaluation`` and
the end-of-training evaluation, and this project's packages answer ``prepare_result_package``/``get_results``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from aitoolbox.experiment._arrays import check_pair, from_tensor, plain
from aitoolbox.experiment.errors import ResultPackageError

__all__ = [
    "AbstractResultPackage",
    "CombinedResultPackage",
    "MultipleResultPackageWrapper",
    "PreCalculatedResultPackage",
    "as_package",
    "merge_packages",
]

logger = logging.getLogger(__name__)


class AbstractResultPackage:
    """Computes metrics from targets and predictions.

    Subclasses implement :meth:`compute` on checked NumPy arrays and list their metric names in ``METRICS``;
    ``metrics=[...]`` selects a subset. Scalar results (floats) are what per-epoch evaluation puts in the training
    history as ``val_<name>`` / ``train_<name>``; others (confusion matrix, per-class report) go to the result files.
    A subclass that implements the original's ``prepare_results_dict()`` instead is an original-style package: its
    constructor arguments are the original's, ``(pkg_name=None, strict_content_check=False, np_array=True, **meta)``.

    Args:
        metrics: the metric names to compute (default: all of ``METRICS``).
        pkg_name: a name used in file names and summaries.
        strict_content_check: a missing result or hyperparameter raises ``ValueError`` instead of logging a warning.
        np_array: what ``prepare_result_package`` keeps as ``self.y_true``/``self.y_predicted``: NumPy arrays
            (``True``), the inputs as given (``False``), or arrays when the rows have one length (``'auto'``).
        **package_metadata: kept as ``self.package_metadata``.

    Example:
        >>> from aitoolbox.experiment.result_package.basic_packages import RegressionResultPackage
        >>> pkg = RegressionResultPackage(metrics=["mse", "mae"])
        >>> pkg.evaluate([1.0, 2.0], [1.0, 4.0])
        {'mse': 2.0, 'mae': 1.0}
        >>> pkg.prepare_result_package([1.0, 2.0], [1.0, 4.0]); pkg.get_results()
        {'mse': 2.0, 'mae': 1.0}
    """

    METRICS: tuple[str, ...] = ()

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        pkg_name: str | None = None,
        strict_content_check: bool = False,
        np_array: bool | str = True,
        **package_metadata: Any,
    ) -> None:
        if self.original_style():
            if metrics is not None:  # the original's positional order is (pkg_name, strict_content_check, ...)
                strict_content_check = pkg_name if isinstance(pkg_name, bool) else strict_content_check
                pkg_name, metrics = str(metrics), None
        elif not self._implements("compute"):
            raise ResultPackageError(
                f"{type(self).__name__} computes nothing: implement compute(y_true, y_pred) (and list METRICS), or "
                "the original's prepare_results_dict()"
            )
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
        if np_array not in (True, False, "auto"):
            raise ResultPackageError(f"np_array must be True, False or 'auto', got {np_array!r}")
        self.metrics: tuple[str, ...] = tuple(metrics) if metrics is not None else self.METRICS
        self.pkg_name = pkg_name or type(self).__name__
        self.strict_content_check, self.np_array = bool(strict_content_check), np_array
        self.package_metadata = package_metadata
        # the original's state, filled by prepare_result_package()
        self.y_true: Any = None
        self.y_predicted: Any = None
        self.hyperparameters: Any = None
        self.additional_results: Any = None
        self.additional_results_dump_paths: Any = None
        self.results_dict: dict[str, Any] | None = None
        self.requires_loss = False

    @classmethod
    def _implements(cls, method: str) -> bool:
        return getattr(cls, method) is not getattr(AbstractResultPackage, method)

    @classmethod
    def original_style(cls) -> bool:
        """True for a package written the original's way (``prepare_results_dict()``, no ``compute()``)."""
        return cls._implements("prepare_results_dict") and not cls._implements("compute")

    @property
    def metrics_known(self) -> bool:
        """Whether the metric names are known before evaluating (not for original-style packages)."""
        return not self.original_style()

    def evaluate(self, y_true: Any, y_pred: Any, metadata: Any = None, hyperparameters: Any = None) -> dict[str, Any]:
        """Check the inputs and return ``{metric: value}`` as plain (JSON-ready) Python values. An original-style
        package gets the model's ``metadata`` as ``additional_results`` and the ``hyperparameters``, as it did."""
        if self.original_style():
            self.prepare_result_package(y_true, y_pred, hyperparameters, additional_results=metadata or {})
            return {name: plain(value) for name, value in (self.results_dict or {}).items()}
        t, p = check_pair(y_true, y_pred)
        results = self.compute(t, p)
        return {name: plain(results[name]) for name in self.metrics if name in results}

    def compute(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        """Return every metric this package computes, from checked arrays with the same number of rows."""
        raise NotImplementedError

    # --- the original AIToolbox contract -------------------------------------------------------------------------

    def prepare_results_dict(self) -> dict[str, Any]:
        """The results of ``self.y_true`` / ``self.y_predicted`` (the original's method to implement)."""
        return self.evaluate(self.y_true, self.y_predicted)

    def prepare_result_package(self, y_true: Any, y_predicted: Any, hyperparameters: Any = None, **kwargs: Any) -> None:
        """Keep the inputs (as ``np_array`` says), then compute ``results_dict`` with :meth:`prepare_results_dict`."""
        if self.np_array is not False:  # tensors become arrays here; np_array=False keeps the inputs as given
            y_true, y_predicted = from_tensor(y_true), from_tensor(y_predicted)
        if self.np_array is True:
            self.y_true, self.y_predicted = np.array(y_true), np.array(y_predicted)
        elif self.np_array == "auto":
            self.y_true = self.auto_y_input_array_convert(y_true)
            self.y_predicted = self.auto_y_input_array_convert(y_predicted)
        else:
            self.y_true, self.y_predicted = y_true, y_predicted
        self.results_dict = None
        self.hyperparameters = hyperparameters
        self.additional_results = kwargs
        self.results_dict = self.prepare_results_dict()

    @staticmethod
    def auto_y_input_array_convert(y_array: Any) -> Any:
        """A NumPy array when every row has the same length, else the input unchanged."""
        lengths = {len(el) for el in y_array} if all(hasattr(el, "__len__") for el in y_array) else {None}
        return np.array(y_array) if len(lengths) <= 1 else y_array

    def get_results(self) -> dict[str, Any] | None:
        """The results of the last :meth:`prepare_result_package` (``None``, with a warning, before one)."""
        if self.results_dict is None:
            self.warn_about_result_data_problem("Warning: Results dict missing")
        return self.results_dict

    def get_hyperparameters(self) -> Any:
        """The hyperparameters given to :meth:`prepare_result_package`."""
        if self.hyperparameters is None:
            self.warn_about_result_data_problem("Warning: Hyperparameters missing")
        return self.hyperparameters

    def get_additional_results_dump_paths(self) -> list[list[str]] | None:
        """``[[file_name, local_path], ...]`` of extra files the package wrote (checked), or ``None``."""
        paths = self.additional_results_dump_paths = self.list_additional_results_dump_paths()
        if paths is not None and not (
            isinstance(paths, list)
            and all(isinstance(el, list) and len(el) == 2 and all(isinstance(x, str) for x in el) for el in paths)
        ):
            raise ValueError(f"additional results dump paths must be [[file_name, local_path], ...], got {paths}")
        return paths

    def list_additional_results_dump_paths(self) -> list[list[str]] | None:
        """Override to name extra files the package writes (the original's hook); none by default."""
        return None

    def set_experiment_dir_path_for_additional_results(
        self, project_name: str, experiment_name: str, experiment_timestamp: str, local_model_result_folder_path: str
    ) -> None:
        """Override to place extra output inside the experiment folder (the original's hook); nothing by default."""

    def qa_check_hyperparameters_dict(self) -> None:
        """The original's check that the hyperparameters are there (and name the experiment's scripts): each
        problem goes to :meth:`warn_about_result_data_problem`."""
        hyper = self.hyperparameters
        if not isinstance(hyper, dict):
            self.warn_about_result_data_problem("Warning: Hyperparameters missing")
            return
        for key in ("bash_script_path", "experiment_file_path"):
            if hyper.get(key) is None:
                self.warn_about_result_data_problem(f"{key} missing from hyperparameters dict")

    def warn_about_result_data_problem(self, msg: str) -> None:
        """Raise ``ValueError(msg)`` with ``strict_content_check``, else log it as a warning."""
        if self.strict_content_check:
            raise ValueError(msg)
        logger.warning("%s: %s", self.pkg_name, msg)

    def warn_if_results_dict_not_defined(self) -> None:
        if self.results_dict is None:
            raise ValueError(f"{self.pkg_name} has no results yet: call prepare_result_package(y_true, y_pred) first")

    def __str__(self) -> str:
        self.warn_if_results_dict_not_defined()
        assert self.results_dict is not None
        return "\n".join(f"{name}: {value}" for name, value in self.results_dict.items())

    def __len__(self) -> int:
        self.warn_if_results_dict_not_defined()
        return len(self.results_dict or {})

    def __contains__(self, item: str) -> bool:
        self.warn_if_results_dict_not_defined()
        return item in (self.results_dict or {})

    def __getitem__(self, item: str) -> Any:
        self.warn_if_results_dict_not_defined()
        assert self.results_dict is not None
        if item not in self.results_dict:
            raise KeyError(f"{item!r} is not among the results: {list(self.results_dict)}")
        return self.results_dict[item]

    # --- combining -----------------------------------------------------------------------------------------------

    def _unevaluated_pair(self, other: object) -> bool:
        """Two of this project's packages before evaluation: ``+`` makes one package computing both."""
        return (
            isinstance(other, AbstractResultPackage)
            and self.results_dict is None
            and other.results_dict is None
            and self.metrics_known
            and other.metrics_known
        )

    def __add__(self, other: object) -> AbstractResultPackage:
        """Before evaluation, ``a + b`` is one package computing both (:class:`CombinedResultPackage`); after (or
        with a dict of results), the original's merge of results into a ``MultipleResultPackageWrapper``."""
        if self._unevaluated_pair(other):
            assert isinstance(other, AbstractResultPackage)
            return CombinedResultPackage([self, other])
        return merge_packages(self, other)

    def __radd__(self, other: object) -> AbstractResultPackage:
        return merge_packages(self, other)

    def __iadd__(self, other: object) -> AbstractResultPackage:
        """Before evaluation as ``+``; after, the other's results are added to this package's ``results_dict``."""
        if self._unevaluated_pair(other):
            return self + other
        self.warn_if_results_dict_not_defined()
        if isinstance(other, AbstractResultPackage):
            other.warn_if_results_dict_not_defined()
            extra = dict(other.results_dict or {})
        elif isinstance(other, dict):
            extra = other
        else:
            raise ValueError(f"a result package can be added to result packages and dicts, not {type(other).__name__}")
        clash = sorted(set(extra) & set(self.results_dict or {}))
        if clash:
            raise ValueError(f"both hold the results {clash}; rename them before merging")
        self.results_dict = {**(self.results_dict or {}), **extra}
        return self

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


def copied(pkg: AbstractResultPackage) -> AbstractResultPackage:
    """A deep copy of an evaluated package (the original's merge copies both sides)."""
    pkg.warn_if_results_dict_not_defined()
    return copy.deepcopy(pkg)


class PreCalculatedResultPackage(AbstractResultPackage):
    """Results computed elsewhere, as a package: ``PreCalculatedResultPackage({"bleu": 31.2})``."""

    def __init__(self, results_dict: dict[str, Any], strict_content_check: bool = False, **kwargs: Any) -> None:
        super().__init__(pkg_name="PreCalculatedResult", strict_content_check=strict_content_check, **kwargs)
        self.results_dict = results_dict
        self.hyperparameters = {}

    def prepare_results_dict(self) -> dict[str, Any]:
        return self.results_dict or {}


class MultipleResultPackageWrapper(AbstractResultPackage):
    """Evaluated packages side by side: ``get_results()`` is ``{package name: its results}`` (a name given twice
    gets its position appended)."""

    def __init__(self, strict_content_check: bool = False, **kwargs: Any) -> None:
        super().__init__(pkg_name="MultipleResultWrapper", strict_content_check=strict_content_check, **kwargs)
        self.result_packages: list[AbstractResultPackage] = []

    def prepare_result_package(  # type: ignore[override]
        self, result_packages: Sequence[AbstractResultPackage], hyperparameters: Any = None, **kwargs: Any
    ) -> None:
        self.results_dict = None
        self.result_packages = list(result_packages)
        self.hyperparameters = hyperparameters
        self.additional_results = kwargs
        self.results_dict = self.prepare_results_dict()

    def prepare_results_dict(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        self.y_true, self.y_predicted = {}, {}
        extra = {self.pkg_name: self.additional_results} if self.additional_results else {}
        for i, pkg in enumerate(self.result_packages):
            name = pkg.pkg_name if pkg.pkg_name is not None else f"ResultPackage{i}"
            name = name if name not in results else f"{name}{i}"
            results[name] = pkg.get_results()
            self.y_true[name], self.y_predicted[name] = pkg.y_true, pkg.y_predicted
            extra[name] = pkg.additional_results
        self.additional_results = extra
        return results

    def __str__(self) -> str:
        return "\n".join(f"--> {pkg.pkg_name}:\n{pkg}" for pkg in self.result_packages)

    def __add__(self, other: object) -> MultipleResultPackageWrapper:
        """A new wrapper holding copies of this one's packages and of ``other`` (a package or a dict)."""
        self.warn_if_results_dict_not_defined()
        wrapper = MultipleResultPackageWrapper()
        packages = [copy.deepcopy(p) for p in self.result_packages]
        wrapper.prepare_result_package([*packages, as_package(other)], self.hyperparameters)
        return wrapper

    __radd__ = __add__

    def __iadd__(self, other: object) -> MultipleResultPackageWrapper:
        """Append a copy of ``other`` (a package or a dict) to this wrapper's packages."""
        self.warn_if_results_dict_not_defined()
        self.prepare_result_package([*self.result_packages, as_package(other)], self.hyperparameters)
        return self

    def get_additional_results_dump_paths(self) -> list[list[str]] | None:
        own = super().get_additional_results_dump_paths()
        subs = [p for pkg in self.result_packages for p in (pkg.get_additional_results_dump_paths() or [])]
        paths = (own or []) + subs or None
        self.additional_results_dump_paths = paths
        return paths


def as_package(other: object) -> AbstractResultPackage:
    """What ``+`` adds: a copy of an evaluated package, or a dict of results as a ``PreCalculatedResultPackage``."""
    if isinstance(other, AbstractResultPackage):
        return copied(other)
    if isinstance(other, dict):
        return PreCalculatedResultPackage(copy.deepcopy(other))
    raise ValueError(f"a result package can be added to result packages and dicts, not {type(other).__name__}")


def merge_packages(pkg: AbstractResultPackage, other: object) -> MultipleResultPackageWrapper:
    """The original's ``pkg + other`` of evaluated packages (or a dict of results): copies of both, side by side."""
    other_pkg = as_package(other)  # first: a bad ``other`` is named before this package's own state is checked
    mine = copied(pkg)
    wrapper = MultipleResultPackageWrapper()
    wrapper.prepare_result_package([mine, other_pkg], mine.hyperparameters)
    return wrapper
