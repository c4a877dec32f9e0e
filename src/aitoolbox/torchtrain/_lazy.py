"""Lazy re-exports: a package lists ``{name: module}`` and imports a module only when one of its names is read.

``import aitoolbox`` must stay as cheap as before (no torch, no scikit-learn); ``from aitoolbox import TrainLoop``
imports what ``TrainLoop`` needs and nothing else; ``from aitoolbox import *`` imports everything listed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a module ``__getattr__`` and ``__dir__`` that resolve ``names`` (attribute -> defining module)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)  # resolved once; later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*names, *vars(importlib.import_module(package))})

    return __getattr__, __dir__
