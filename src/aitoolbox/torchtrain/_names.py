"""The meta-package's name tables, in one place: where each name of the original AIToolbox 1.8's top-level
packages lives here (name -> defining module), and which distribution ships each member subpackage.

``aitoolbox`` and ``aitoolbox.torchtrain`` re-export these lazily (see :mod:`aitoolbox.torchtrain._lazy`), so
``from aitoolbox import TrainLoop, TTModel`` works as it did; ``scripts/check_architecture.py`` checks each
package's ``__all__`` and ``TYPE_CHECKING`` imports against them.
"""

from __future__ import annotations

__all__ = ["CALLBACKS", "DISTRIBUTIONS", "EXPERIMENT", "TOP_LEVEL", "TORCHTRAIN"]

#: the member subpackages and the distribution that ships each
DISTRIBUTIONS = {
    "aitoolbox.loop": "aitoolbox-core-loop",
    "aitoolbox.checkpointing": "aitoolbox-checkpointing",
    "aitoolbox.experiment": "aitoolbox-results",
    "aitoolbox.cloud": "aitoolbox-cloud",
}

_TT = "aitoolbox.torchtrain"
_CB = "aitoolbox.torchtrain.callbacks"

#: ``aitoolbox.torchtrain``'s names
TORCHTRAIN = {
    "TTModel": f"{_TT}.model",
    "TTBasicModel": f"{_TT}.model",
    "ModelWrap": f"{_TT}.model",
    "MultiGPUModelWrap": f"{_TT}.model",
    "TTDataParallel": f"{_TT}.parallel",
    "TrainLoop": f"{_TT}.train_loop",
    "TrainLoopCheckpoint": f"{_TT}.train_loop",
    "TrainLoopEndSave": f"{_TT}.train_loop",
    "TrainLoopCheckpointEndSave": f"{_TT}.train_loop",
    "AbstractModelFeedDefinition": f"{_TT}.data.batch_model_feed_defs",
    "BasicDataset": f"{_TT}.data.dataset",
    "MultiLoss": f"{_TT}.multi_loss_optim",
    "MultiOptimizer": f"{_TT}.multi_loss_optim",
}

#: ``aitoolbox.torchtrain.callbacks``' names
CALLBACKS = {
    "AbstractCallback": f"{_CB}.abstract",
    "AbstractExperimentCallback": f"{_CB}.abstract",
    "EarlyStopping": f"{_CB}.basic",
    "ThresholdEarlyStopping": f"{_CB}.basic",
    "TerminateOnNaN": f"{_CB}.basic",
    "AllPredictionsSame": f"{_CB}.basic",
    "EmailNotification": f"{_CB}.basic",
    "LogUpload": f"{_CB}.basic",
    "ModelPerformanceEvaluation": f"{_CB}.performance_eval",
    "ModelPerformancePrintReport": f"{_CB}.performance_eval",
    "ModelTrainHistoryFileWriter": f"{_CB}.performance_eval",
    "ModelTrainHistoryPlot": f"{_CB}.performance_eval",
    "GradNormClip": f"{_CB}.gradient",
    "GradValueClip": f"{_CB}.gradient",
    "TensorboardFullTracking": f"{_CB}.tensorboard",
    "TensorboardTrainHistoryMetric": f"{_CB}.tensorboard",
    # the original re-exported these schedulers here "for back-compatibility"
    "LinearWithWarmupScheduler": f"{_TT}.schedulers.warmup",
    "ReduceLROnPlateauScheduler": f"{_TT}.schedulers.basic",
    "ReduceLROnPlateauMetricScheduler": f"{_TT}.schedulers.basic",
}

#: ``aitoolbox.experiment``'s names in the original (its result packages)
EXPERIMENT = {
    name: "aitoolbox.experiment.result_package.basic_packages"
    for name in ("BinaryClassificationResultPackage", "ClassificationResultPackage", "RegressionResultPackage")
}

#: ``aitoolbox``'s names: the original's ``from aitoolbox.torchtrain import *``, ``...callbacks import *`` and
#: ``from aitoolbox.experiment import *``
TOP_LEVEL = {**TORCHTRAIN, **CALLBACKS, **EXPERIMENT}
