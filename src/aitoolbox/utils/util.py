"""The original AIToolbox's ``aitoolbox.utils.util``: the helper user callbacks call (``function_exists``)."""

from __future__ import annotations

__all__ = ["function_exists"]


def function_exists(object_to_check: object, fn_name: str) -> bool:
    """Whether ``object_to_check`` has a callable attribute ``fn_name``.

    >>> function_exists([], "append"), function_exists([], "nothing")
    (True, False)
    """
    return callable(getattr(object_to_check, fn_name, None))
