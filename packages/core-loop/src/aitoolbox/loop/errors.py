"""The exceptions raised by :mod:`aitoolbox.loop`.

Every error derives from :class:`LoopError` and from the built-in exception that matches what went wrong, so
``except ValueError`` keeps working for code that does not know about this package.
"""

from __future__ import annotations

from typing import Literal, overload

__all__ = [
    "LoopConfigError",
    "LoopError",
    "ModelNotSupportedError",
    "NonFiniteLossError",
    "ResumeMismatchError",
    "check_int",
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


@overload
def check_int(
    name: str, value: object, minimum: int, *, optional: Literal[False] = False, expected: str = ""
) -> int: ...
@overload
def check_int(name: str, value: object, minimum: int, *, optional: bool, expected: str = "") -> int | None: ...
def check_int(name: str, value: object, minimum: int, *, optional: bool = False, expected: str = "") -> int | None:
    """``value`` when it is an int (not a bool) >= ``minimum`` (or None, when ``optional``); else a
    :class:`LoopConfigError` saying ``<name> must be <expected> [or None], got <value>``. The one int check of the
    loop and of the packages built on it.

    Example:
        >>> check_int("patience", 3, 0)
        3
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = expected or f"an int >= {minimum}"
        raise LoopConfigError(f"{name} must be {wanted}{' or None' if optional else ''}, got {value!r}")
    return value
