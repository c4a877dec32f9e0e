"""The exceptions raised by :mod:`aitoolbox.experiment`."""

from __future__ import annotations

__all__ = ["ExperimentWriteError", "ResultPackageError", "ResultsError"]


class ResultsError(Exception):
    """Base class of every error raised by the results package."""


class ResultPackageError(ResultsError, ValueError):
    """Predictions or targets cannot be evaluated (empty, mismatched lengths or shapes, NaN, unknown metric)."""


class ExperimentWriteError(ResultsError, OSError):
    """An experiment file could not be written; files written before are complete and untouched."""
