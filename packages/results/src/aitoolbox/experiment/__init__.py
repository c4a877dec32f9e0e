"""aitoolbox.experiment: result packages and experiment folders (NumPy and scikit-learn; no torch needed)."""

from aitoolbox.experiment._version import __version__
from aitoolbox.experiment.errors import ExperimentWriteError, ResultPackageError, ResultsError
from aitoolbox.experiment.experiment_writer import ExperimentWriter

__all__ = ["ExperimentWriteError", "ExperimentWriter", "ResultPackageError", "ResultsError", "__version__"]
