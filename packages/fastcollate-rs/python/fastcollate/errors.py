"""The exceptions of fastcollate: one base class, split by what was wrong with the batch.

Each also inherits the matching built-in, so ``except ValueError`` / ``except TypeError`` keep working. The Rust
extension raises these same classes (it looks them up here).
"""

from __future__ import annotations

__all__ = [
    "CollateDtypeError",
    "CollateError",
    "CollateIndexError",
    "CollateShapeError",
    "CollateStructureError",
    "CollateTypeError",
]


class CollateError(Exception):
    """Base class of every error fastcollate raises."""


class CollateTypeError(CollateError, TypeError):
    """A sample holds something that cannot be batched (object arrays, nested or sparse tensors, GPU tensors...)."""


class CollateShapeError(CollateError, ValueError):
    """Samples whose tensors differ in shape where they must be equal (or a buffer of the wrong size)."""


class CollateDtypeError(CollateError, ValueError):
    """Samples whose tensors have different dtypes."""


class CollateStructureError(CollateError, ValueError):
    """A sample whose nesting (keys, lengths, container types) differs from sample 0's."""


class CollateIndexError(CollateError, IndexError):
    """A gather index outside the dataset."""
