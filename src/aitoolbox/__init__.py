"""AIToolbox: PyTorch training loops assembled from small, separately installable packages.

``aitoolbox`` is shared by the packages (``aitoolbox.loop``, ``aitoolbox.checkpointing``, ``aitoolbox.experiment``,
``aitoolbox.cloud``, ``aitoolbox.torchtrain``), each installable alone. This file, shipped by the meta-package only,
extends the package path over all of them (``pkgutil``-style) and re-exports, lazily, the names the original
AIToolbox 1.8 had at the top level: ``from aitoolbox import TrainLoopCheckpointEndSave, TTModel`` imports just what
those need, and ``import aitoolbox`` imports nothing heavy.
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import TYPE_CHECKING

__path__ = extend_path(__path__, __name__)

from aitoolbox.torchtrain import _missing
from aitoolbox.torchtrain._lazy import lazy_exports
from aitoolbox.torchtrain._names import TOP_LEVEL

_missing.install()  # a member distribution that is not installed is named with its `pip install`

__getattr__, __dir__ = lazy_exports(__name__, TOP_LEVEL)
__all__ = [
    "AbstractCallback",
    "AbstractExperimentCallback",
    "AbstractModelFeedDefinition",
    "AllPredictionsSame",
    "BasicDataset",
    "BinaryClassificationResultPackage",
    "ClassificationResultPackage",
    "EarlyStopping",
    "EmailNotification",
    "GradNormClip",
    "GradValueClip",
    "LinearWithWarmupScheduler",
    "LogUpload",
    "ModelPerformanceEvaluation",
    "ModelPerformancePrintReport",
    "ModelTrainHistoryFileWriter",
    "ModelTrainHistoryPlot",
    "ModelWrap",
    "MultiGPUModelWrap",
    "MultiLoss",
    "MultiOptimizer",
    "ReduceLROnPlateauMetricScheduler",
    "ReduceLROnPlateauScheduler",
    "RegressionResultPackage",
    "TTBasicModel",
    "TTDataParallel",
    "TTModel",
    "TensorboardFullTracking",
    "TensorboardTrainHistoryMetric",
    "TerminateOnNaN",
    "ThresholdEarlyStopping",
    "TrainLoop",
    "TrainLoopCheckpoint",
    "TrainLoopCheckpointEndSave",
    "TrainLoopEndSave",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names resolve on first use
    from aitoolbox.experiment.result_package.basic_packages import (
        BinaryClassificationResultPackage as BinaryClassificationResultPackage,
    )
    from aitoolbox.experiment.result_package.basic_packages import (
        ClassificationResultPackage as ClassificationResultPackage,
    )
    from aitoolbox.experiment.result_package.basic_packages import (
        RegressionResultPackage as RegressionResultPackage,
    )
    from aitoolbox.torchtrain.callbacks.abstract import (
        AbstractCallback as AbstractCallback,
    )
    from aitoolbox.torchtrain.callbacks.abstract import (
        AbstractExperimentCallback as AbstractExperimentCallback,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        AllPredictionsSame as AllPredictionsSame,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        EarlyStopping as EarlyStopping,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        EmailNotification as EmailNotification,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        LogUpload as LogUpload,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        TerminateOnNaN as TerminateOnNaN,
    )
    from aitoolbox.torchtrain.callbacks.basic import (
        ThresholdEarlyStopping as ThresholdEarlyStopping,
    )
    from aitoolbox.torchtrain.callbacks.gradient import (
        GradNormClip as GradNormClip,
    )
    from aitoolbox.torchtrain.callbacks.gradient import (
        GradValueClip as GradValueClip,
    )
    from aitoolbox.torchtrain.callbacks.performance_eval import (
        ModelPerformanceEvaluation as ModelPerformanceEvaluation,
    )
    from aitoolbox.torchtrain.callbacks.performance_eval import (
        ModelPerformancePrintReport as ModelPerformancePrintReport,
    )
    from aitoolbox.torchtrain.callbacks.performance_eval import (
        ModelTrainHistoryFileWriter as ModelTrainHistoryFileWriter,
    )
    from aitoolbox.torchtrain.callbacks.performance_eval import (
        ModelTrainHistoryPlot as ModelTrainHistoryPlot,
    )
    from aitoolbox.torchtrain.callbacks.tensorboard import (
        TensorboardFullTracking as TensorboardFullTracking,
    )
    from aitoolbox.torchtrain.callbacks.tensorboard import (
        TensorboardTrainHistoryMetric as TensorboardTrainHistoryMetric,
    )
    from aitoolbox.torchtrain.data.batch_model_feed_defs import (
        AbstractModelFeedDefinition as AbstractModelFeedDefinition,
    )
    from aitoolbox.torchtrain.data.dataset import (
        BasicDataset as BasicDataset,
    )
    from aitoolbox.torchtrain.model import (
        ModelWrap as ModelWrap,
    )
    from aitoolbox.torchtrain.model import (
        MultiGPUModelWrap as MultiGPUModelWrap,
    )
    from aitoolbox.torchtrain.model import (
        TTBasicModel as TTBasicModel,
    )
    from aitoolbox.torchtrain.model import (
        TTModel as TTModel,
    )
    from aitoolbox.torchtrain.multi_loss_optim import (
        MultiLoss as MultiLoss,
    )
    from aitoolbox.torchtrain.multi_loss_optim import (
        MultiOptimizer as MultiOptimizer,
    )
    from aitoolbox.torchtrain.parallel import (
        TTDataParallel as TTDataParallel,
    )
    from aitoolbox.torchtrain.schedulers.basic import (
        ReduceLROnPlateauMetricScheduler as ReduceLROnPlateauMetricScheduler,
    )
    from aitoolbox.torchtrain.schedulers.basic import (
        ReduceLROnPlateauScheduler as ReduceLROnPlateauScheduler,
    )
    from aitoolbox.torchtrain.schedulers.warmup import (
        LinearWithWarmupScheduler as LinearWithWarmupScheduler,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoop as TrainLoop,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopCheckpoint as TrainLoopCheckpoint,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopCheckpointEndSave as TrainLoopCheckpointEndSave,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopEndSave as TrainLoopEndSave,
    )
