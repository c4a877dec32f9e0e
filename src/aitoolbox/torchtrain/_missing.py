"""A missing member distribution is named with the line that installs it.

The meta-package depends on every member, but an environment can still lack one (``pip install --no-deps``, an
uninstall, a partial image). Without this, ``from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint`` fails
with ``No module named 'aitoolbox.checkpointing'``; with it, the error says ``pip install aitoolbox-checkpointing``.
The finder is consulted last (after every real one), so it never hides an installed package.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from aitoolbox.torchtrain._names import DISTRIBUTIONS

__all__ = ["MissingDistributionFinder", "install"]


class MissingDistributionFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: asked only for a module no real finder has; for a member subpackage it raises the
    ``ModuleNotFoundError`` that names the install (a module missing inside an installed one is left to Python)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        distribution = DISTRIBUTIONS.get(fullname)
        if distribution is None:
            return None
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: the {distribution} distribution is not installed. Install it with "
            f"`pip install {distribution}` (or `pip install aitoolbox`, which brings every piece)",
            name=fullname,
        )


def install() -> None:
    """Put the finder last on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MissingDistributionFinder) for finder in sys.meta_path):
        sys.meta_path.append(MissingDistributionFinder())
