"""The exceptions raised by :mod:`aitoolbox.loop`.

Every error derives from :class:`LoopError` and from the built-in exception that matches what went wrong, so
``except ValueError`` keeps working for code that does not know about this package.
"""

from __future__ import annotations

__all__ = [
    "LoopConfigError",
    "LoopError",
    "ModelNotSupportedError",
    "NonFiniteLossError",
    "ResumeMismatchError",
]


class LoopError(Exception):
    """Base class of every error raised by the training loop."""


class LoopConfigError(LoopError, ValueError):
    """An argument of ``TrainLoop``, ``fit`` or a callback is invalid; the message says what to change."""


class ModelNotSupportedError(LoopConfigError, TypeError):
    """The model is neither a :class:`~aitoolbox.loop.TTModel` nor an ``nn.Module`` that can be adapted.

    .. versionchanged:: 0.2
        Also a :class:`LoopConfigError`, as the README says of every bad constructor argument.
    """


class ResumeMismatchError(LoopConfigError):
    """The run being resumed differs from the one that saved the state (optimizer, loader, batch size...); the
    message names what changed.

    .. versionadded:: 0.2
    """


class NonFiniteLossError(LoopError, FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes:
        epoch: 0-based epoch in which the first non-finite loss appeared.
        iteration: 0-based global iteration (batch) of that loss, or ``None`` when only the epoch is known.
    """

    def __init__(self, message: str, *, epoch: int, iteration: int | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.iteration = iteration
