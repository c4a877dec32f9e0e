"""aitoolbox.experiment: result packages and experiment folders (NumPy and scikit-learn; no torch needed)."""

from aitoolbox.experiment._version import __version__
from aitoolbox.experiment.errors import (
    ExperimentLockedError,
    ExperimentPathError,
    ExperimentWriteError,
    ResultPackageError,
    ResultsError,
)
from aitoolbox.experiment.experiment_writer import ExperimentWriter
from aitoolbox.experiment.lock import ExperimentLock
from aitoolbox.experiment.result_package.basic_packages import (  # the original's names here
    BinaryClassificationResultPackage,
    ClassificationResultPackage,
    RegressionResultPackage,
)

__all__ = [
    "BinaryClassificationResultPackage",
    "ClassificationResultPackage",
    "ExperimentLock",
    "ExperimentLockedError",
    "ExperimentPathError",
    "ExperimentWriteError",
    "ExperimentWriter",
    "RegressionResultPackage",
    "ResultPackageError",
    "ResultsError",
    "__version__",
]
