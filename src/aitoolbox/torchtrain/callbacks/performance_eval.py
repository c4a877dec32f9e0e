"""Performance evaluation and reporting callbacks, under the original AIToolbox module path.

:class:`ModelPerformanceEvaluation` puts a result package's scalar metrics in the training history
(``val_<metric>``, ``train_<metric>``); :class:`ModelPerformancePrintReport` prints them; :class:`ModelTrainHistoryPlot`
and :class:`ModelTrainHistoryFileWriter` write the history into the experiment folder as it grows.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from aitoolbox.experiment import ExperimentWriter
from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import LoopConfigError, LoopView
from aitoolbox.loop.callbacks import Callback, Every
from aitoolbox.loop.callbacks.base import check_metric_will_exist
from aitoolbox.loop.errors import check_int
from aitoolbox.torchtrain.callbacks.abstract import AbstractExperimentCallback

__all__ = [
    "MetricHistoryRename",
    "ModelPerformanceEvaluation",
    "ModelPerformancePrintReport",
    "ModelTrainHistoryFileWriter",
    "ModelTrainHistoryPlot",
    "TrainHistoryFormatter",
]

logger = logging.getLogger(__name__)

#: the prefix of the metrics evaluated once more when training ends (the original's ``train_end_`` entries)
TRAIN_END = "train_end_"


def _schedule(frequency: int | None) -> Every | None:
    """Every ``frequency``-th epoch from the first (0-based epochs 0, N, 2N..., as the original)."""
    return None if frequency is None else Every(frequency, "epoch", start=1)


@runtime_checkable
class _TrackedView(LoopView, Protocol):
    """A tracked variant (it has an experiment folder)."""

    project_name: str
    experiment_name: str
    local_model_result_folder_path: str


class ModelPerformanceEvaluation(Callback):
    """Evaluate ``result_package`` and add its scalar metrics to the history as ``val_<metric>`` / ``train_<metric>``.

    Evaluated at every epoch end (or every ``eval_frequency``-th, 0-based epochs 0, N, 2N...), and once more when
    training ends, recorded then as ``train_end_val_<metric>`` / ``train_end_train_<metric>``. Only scalar metrics go
    into the history (not the confusion matrix or the per-class report), so
    :class:`~aitoolbox.loop.callbacks.EarlyStopping` and checkpoint ranking can monitor e.g. ``'val_accuracy'``
    (the original's ``'val_Accuracy'`` is read as the same metric). It runs before the other epoch-end callbacks.

    Args:
        result_package: e.g. ``ClassificationResultPackage()``; the same instance serves both sets (it keeps no state).
        args: the hyperparameters (the original's second argument), handed to an original-style package with the
            model's metadata (its ``additional_results``).
        on_each_epoch: evaluate at epoch ends; ``False``: only when training ends.
        on_train_data: also evaluate on the training loader (a full extra pass each time).
        on_val_data: evaluate on the validation loader.
        eval_frequency: evaluate every N-th epoch only.
        if_available_output_to_project_dir: accepted for the original's signature (result packages here write no
            extra files).

    Example:
        .. code-block:: python

            tl.fit(num_epochs=20, callbacks=[
                ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy", "f1_macro"])),
                EarlyStopping(monitor="val_accuracy", patience=3),
            ])
    """

    def __init__(
        self,
        result_package: AbstractResultPackage,
        args: Mapping[str, Any] | None = None,
        on_each_epoch: bool = True,
        on_train_data: bool = False,
        on_val_data: bool = True,
        eval_frequency: int | None = None,
        if_available_output_to_project_dir: bool = True,
    ) -> None:
        super().__init__("Model performance calculator - evaluator", execution_order=-100)
        if not isinstance(result_package, AbstractResultPackage):
            raise LoopConfigError(f"result_package must be a result package instance, got {result_package!r}")
        if args is not None and not isinstance(args, Mapping):
            raise LoopConfigError(
                f"args must be the hyperparameters dict (or None), got {args!r}; give the other options by keyword "
                "(on_train_data=True)"
            )
        if not on_train_data and not on_val_data:
            raise LoopConfigError("ModelPerformanceEvaluation needs on_train_data=True or on_val_data=True")
        check_int("eval_frequency", eval_frequency, 1, optional=True, expected="a positive int or None")
        self.result_package = result_package
        self.args = dict(args or {})
        self.on_each_epoch, self.eval_frequency = on_each_epoch, eval_frequency
        self.hook_schedule = _schedule(eval_frequency)
        self.on_train_data, self.on_val_data = on_train_data, on_val_data
        self.if_available_output_to_project_dir = if_available_output_to_project_dir

    def on_train_loop_registration(self) -> None:
        tl = self.train_loop_obj
        if self.on_val_data and tl.validation_loader is None:
            raise LoopConfigError(
                "ModelPerformanceEvaluation(on_val_data=True) needs a validation_loader; pass one to the TrainLoop"
            )
        if self.if_available_output_to_project_dir and isinstance(tl, _TrackedView):
            self.result_package.set_experiment_dir_path_for_additional_results(
                tl.project_name, tl.experiment_name, tl.experiment_timestamp, str(tl.local_model_result_folder_path)
            )

    def provided_metrics(self) -> tuple[str, ...] | None:
        if not self.result_package.metrics_known:
            return None  # an original-style package names its results when it has computed them
        prefixes = [p for p, on in (("train", self.on_train_data), ("val", self.on_val_data)) if on]
        names = [f"{prefix}_{name}" for prefix in prefixes for name in self.result_package.metrics]
        return (*names, *(TRAIN_END + n for n in names))

    def on_epoch_end(self) -> None:
        if self.on_each_epoch:  # every eval_frequency-th epoch (hook_schedule)
            self.evaluate_model_performance()

    def on_train_end(self) -> None:
        self.evaluate_model_performance(prefix=TRAIN_END)

    def evaluate_model_performance(self, prefix: str = "") -> None:
        """Evaluate the package on the chosen sets and append the scalar results to the history."""
        tl = self.train_loop_obj
        splits = [("train", tl.predict_on_train_set)] if self.on_train_data else []
        if self.on_val_data:
            splits.append(("val", tl.predict_on_validation_set))
        for split, predict in splits:
            y_pred, y_true, metadata = predict()
            for name, value in self.result_package.evaluate(y_true, y_pred, metadata, self.args).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    tl.train_history.insert_single_result_into_history(f"{prefix}{split}_{name}", float(value))
            reset = getattr(self.result_package, "metric_reset", None)
            if callable(reset):  # a stateful metric (TorchMetricsPackage): each evaluation starts empty
                reset()


class ModelPerformancePrintReport(Callback):
    """Print the last value of each of ``metrics`` at every epoch end (or every ``report_frequency``-th) and when
    training ends (their ``train_end_`` values). Put it after the callbacks that compute the metrics.

    Args:
        metrics: history names, e.g. ``['val_accuracy']`` (the original's ``'val_Accuracy'`` is the same metric).
        on_each_epoch: report at epoch ends; ``False``: only when training ends.
        report_frequency: report every N-th epoch only.
        strict_metric_reporting: a metric missing from the history is an error (else a warning).
        list_tracked_metrics: also print every metric name the history holds.
        stream: where to write (default ``sys.stdout``); only the main process writes.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        on_each_epoch: bool = True,
        report_frequency: int | None = None,
        strict_metric_reporting: bool = True,
        list_tracked_metrics: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        super().__init__("Model performance print reporter", execution_order=97, device_idx_execution=0)
        if isinstance(metrics, str) or not metrics:
            raise LoopConfigError(f"metrics must be a non-empty list of history names, got {metrics!r}")
        check_int("report_frequency", report_frequency, 1, optional=True, expected="a positive int or None")
        self.metrics = list(metrics)
        self.on_each_epoch, self.report_frequency = on_each_epoch, report_frequency
        self.hook_schedule = _schedule(report_frequency)
        self.strict_metric_reporting, self.list_tracked_metrics = strict_metric_reporting, list_tracked_metrics
        self.stream = stream

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # reports, adds nothing

    def on_train_begin(self) -> None:
        if self.strict_metric_reporting:  # a metric nothing computes is named now, not after training
            for metric in self.metrics:
                check_metric_will_exist(self.train_loop_obj, metric, "ModelPerformancePrintReport reports")

    def on_epoch_end(self) -> None:
        if self.on_each_epoch:  # every report_frequency-th epoch (hook_schedule)
            self.print_performance_report(title="End of epoch performance report")

    def on_train_end(self) -> None:
        self.print_performance_report(prefix=TRAIN_END, title="End of training performance report")

    def print_performance_report(self, prefix: str = "", title: str = "Performance report") -> None:
        tl = self.train_loop_obj
        if not tl.is_main_process:
            return
        history = tl.train_history
        lines = [f"{f' {title} ':-^72}"]
        if self.list_tracked_metrics:
            lines.append(", ".join(history))
        for metric in self.metrics:
            name = prefix + metric
            if name in history:
                lines.append(f"{name}: {history[name][-1]}")
                continue
            message = f"metric {name} is not in the training history, which holds {list(history)}"
            if self.strict_metric_reporting:
                raise LoopConfigError(message + "; add the callback that computes it, before this one")
            logger.warning(message)
        (self.stream or sys.stdout).write("\n".join(lines) + "\n")


class TrainHistoryFormatter(Callback):
    """Add a metric computed from the history: ``output_metric_setter(input_metric_getter(history))`` returns
    ``(name, value)``, appended at each epoch end (``epoch_end=True``) or once when training ends."""

    def __init__(
        self,
        input_metric_getter: Callable[[Any], Sequence[Any]],
        output_metric_setter: Callable[[Sequence[Any]], tuple[str, Any]],
        epoch_end: bool = True,
        train_end: bool = False,
        strict_metric_extract: bool = True,
    ) -> None:
        super().__init__("Train history general formatter engine")
        if epoch_end == train_end:
            raise LoopConfigError(f"set exactly one of epoch_end and train_end, got {epoch_end} and {train_end}")
        self.input_metric_getter, self.output_metric_setter = input_metric_getter, output_metric_setter
        self.epoch_end, self.train_end, self.strict_metric_extract = epoch_end, train_end, strict_metric_extract

    def on_epoch_end(self) -> None:
        if self.epoch_end and self._updated(self.train_loop_obj.epoch + 1):
            self.format_history()

    def on_train_end(self) -> None:
        if self.train_end and self._updated(1):
            self.format_history()

    def format_history(self) -> None:
        history = self.train_loop_obj.train_history
        name, value = self.output_metric_setter(self.input_metric_getter(history))
        history.insert_single_result_into_history(name, value)

    def _updated(self, expected: int) -> bool:
        found = len(self.input_metric_getter(self.train_loop_obj.train_history))
        if found == expected:
            return True
        message = f"the metric is not updated yet: expected {expected} history values, found {found}"
        if self.strict_metric_extract:
            raise LoopConfigError(message + "; put this callback after the one that computes the metric")
        logger.warning(message)
        return False


class MetricHistoryRename(TrainHistoryFormatter):
    """Copy the latest value of ``input_metric_path`` (a name, or ``fn(history) -> list``) to ``new_metric_name``."""

    def __init__(
        self,
        input_metric_path: str | Callable[[Any], Sequence[Any]],
        new_metric_name: str,
        epoch_end: bool = True,
        train_end: bool = False,
        strict_metric_extract: bool = True,
    ) -> None:
        def getter(history: Any) -> Sequence[Any]:
            return input_metric_path(history) if callable(input_metric_path) else history[input_metric_path]

        super().__init__(
            getter, lambda values: (new_metric_name, values[-1]), epoch_end, train_end, strict_metric_extract
        )


class _HistoryFileCallback(AbstractExperimentCallback):
    """Writes into the experiment folder at epoch ends and/or when training ends (main process only)."""

    def __init__(self, name: str, epoch_end: bool, train_end: bool, **details: Any) -> None:
        super().__init__(name, execution_order=97, device_idx_execution=0, **details)
        if not epoch_end and not train_end:
            raise LoopConfigError("set epoch_end=True or train_end=True: otherwise nothing is ever written")
        self.epoch_end, self.train_end = epoch_end, train_end

    def on_train_loop_registration(self) -> None:
        self.try_infer_experiment_details(infer_cloud_details=True)

    def on_epoch_end(self) -> None:
        if self.epoch_end and self.train_loop_obj.is_main_process:
            self.write(self.experiment_dir())

    def on_train_end(self) -> None:
        if self.train_end and self.train_loop_obj.is_main_process:
            self.write(self.experiment_dir())

    def write(self, folder: Path) -> None:
        raise NotImplementedError


class ModelTrainHistoryPlot(_HistoryFileCallback):
    """Plot every numeric history metric (PNG, one per metric) into ``<experiment folder>/plots/``.

    With a tracked variant the folder is its experiment folder (uploaded with it in the cloud modes); with a plain
    ``TrainLoop`` give ``project_name``, ``experiment_name`` and ``local_model_result_folder_path``.
    """

    def __init__(
        self, epoch_end: bool = True, train_end: bool = False, file_format: str = "png", **details: Any
    ) -> None:
        if file_format != "png":
            raise LoopConfigError(f"file_format={file_format!r} is not supported; the plots are written as 'png'")
        super().__init__("Model Train history Plot report", epoch_end, train_end, **details)
        self.file_format = file_format

    def write(self, folder: Path) -> None:
        from aitoolbox.experiment.plots import plot_history

        history = self.train_loop_obj.train_history
        plot_history(history, folder / "plots", epochs=history.epochs())


class ModelTrainHistoryFileWriter(_HistoryFileCallback):
    """Rewrite the training history into ``<experiment folder>/results/`` as CSV and JSON, atomically.

    ``file_format`` (the original's ``'txt'``/``'tsv'``) is accepted: the files are always CSV and JSON.
    """

    def __init__(
        self, epoch_end: bool = True, train_end: bool = False, file_format: str = "csv", **details: Any
    ) -> None:
        if file_format not in ("csv", "txt", "tsv"):
            raise LoopConfigError(f"file_format={file_format!r} is not supported; the history is written as CSV")
        super().__init__("Model Train performance history file writer", epoch_end, train_end, **details)
        self.file_format = file_format

    def write(self, folder: Path) -> None:
        history = self.train_loop_obj.train_history
        ExperimentWriter(folder).write_history(history, epochs=history.epochs())
