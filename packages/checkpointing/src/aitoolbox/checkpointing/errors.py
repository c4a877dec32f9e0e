"""The exceptions raised by :mod:`aitoolbox.checkpointing`."""

from __future__ import annotations

__all__ = [
    "CheckpointConfigError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointIncompatibleError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
]


class CheckpointError(Exception):
    """Base class of every checkpointing error."""


class CheckpointConfigError(CheckpointError, ValueError):
    """An argument is invalid (retention settings, state that is not plain data...); the message says what to change."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No valid (committed and undamaged) checkpoint exists where one was asked for."""


class CheckpointCorruptError(CheckpointError, ValueError):
    """A committed checkpoint failed verification: a file is missing, truncated or its SHA-256 differs."""


class CheckpointIncompatibleError(CheckpointError, ValueError):
    """The checkpoint does not fit the run: a required part is missing, or the model's keys or shapes differ."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (disk full, permissions...). Earlier checkpoints are untouched; retry is possible."""
