"""TrainLoop callbacks: the base class, the built-in ones, and the original AIToolbox's under its names."""

from aitoolbox.loop.callbacks import Callback, LRSchedulerCallback, ProgressBar, ProgressLog
from aitoolbox.torchtrain.callbacks._loggers import CSVHistoryWriter, TensorBoardLogger
from aitoolbox.torchtrain.callbacks.abstract import AbstractCallback, AbstractExperimentCallback
from aitoolbox.torchtrain.callbacks.basic import (
    AllPredictionsSame,
    DataSubsetTestRun,
    EarlyStopping,
    EmailNotification,
    FunctionOnTrainLoop,
    ListRegisteredCallbacks,
    LogUpload,
    TerminateOnNaN,
    ThresholdEarlyStopping,
)
from aitoolbox.torchtrain.callbacks.gradient import (
    GradientCallbackBase,
    GradientStatsPrint,
    GradNormClip,
    GradValueClip,
)
from aitoolbox.torchtrain.callbacks.performance_eval import (
    MetricHistoryRename,
    ModelPerformanceEvaluation,
    ModelPerformancePrintReport,
    ModelTrainHistoryFileWriter,
    ModelTrainHistoryPlot,
    TrainHistoryFormatter,
)
from aitoolbox.torchtrain.callbacks.tensorboard import TensorboardFullTracking, TensorboardTrainHistoryMetric
from aitoolbox.torchtrain.schedulers.basic import ReduceLROnPlateauMetricScheduler, ReduceLROnPlateauScheduler
from aitoolbox.torchtrain.schedulers.warmup import LinearWithWarmupScheduler

__all__ = [
    "AbstractCallback",
    "AbstractExperimentCallback",
    "AllPredictionsSame",
    "CSVHistoryWriter",
    "Callback",
    "DataSubsetTestRun",
    "EarlyStopping",
    "EmailNotification",
    "FunctionOnTrainLoop",
    "GradNormClip",
    "GradValueClip",
    "GradientCallbackBase",
    "GradientStatsPrint",
    "LRSchedulerCallback",
    "LinearWithWarmupScheduler",
    "ListRegisteredCallbacks",
    "LogUpload",
    "MetricHistoryRename",
    "ModelPerformanceEvaluation",
    "ModelPerformancePrintReport",
    "ModelTrainHistoryFileWriter",
    "ModelTrainHistoryPlot",
    "ProgressBar",
    "ProgressLog",
    "ReduceLROnPlateauMetricScheduler",
    "ReduceLROnPlateauScheduler",
    "TensorBoardLogger",
    "TensorboardFullTracking",
    "TensorboardTrainHistoryMetric",
    "TerminateOnNaN",
    "ThresholdEarlyStopping",
    "TrainHistoryFormatter",
]
