"""The exceptions raised by :mod:`aitoolbox.experiment`."""

from __future__ import annotations

__all__ = ["ExperimentLockedError", "ExperimentPathError", "ExperimentWriteError", "ResultPackageError", "ResultsError"]


class ResultsError(Exception):
    """Base class of every error raised by the results package."""


class ResultPackageError(ResultsError, ValueError):
    """Predictions or targets cannot be evaluated (empty, mismatched lengths or shapes, NaN, unknown metric)."""


class ExperimentWriteError(ResultsError, OSError):
    """An experiment file could not be written; files written before are complete and untouched."""


class ExperimentPathError(ResultsError, ValueError):
    """A file name given to an :class:`~aitoolbox.experiment.ExperimentWriter` would resolve outside its experiment
    folder (absolute, ``..``, or through a symbolic link); nothing was written.

    .. versionadded:: 0.4
    """


class ExperimentLockedError(ResultsError, RuntimeError):
    """Another process is writing the experiment folder (the message names it); nothing was written.

    .. versionadded:: 0.4
    """
