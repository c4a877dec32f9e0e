"""The exceptions of fastcollate: one base class, split by what was wrong with the batch.

Each also inherits the matching built-in, so ``except ValueError`` / ``except TypeError`` keep working, and the one
``default_collate`` raises in the same case (``RuntimeError`` for ragged shapes and list lengths, ``KeyError`` for a
missing key), so code written around ``default_collate`` keeps catching them. The Rust extension raises these same
classes (it looks them up here).
"""

from __future__ import annotations

__all__ = [
    "CollateContainerError",
    "CollateDtypeError",
    "CollateError",
    "CollateIndexError",
    "CollateKeyError",
    "CollateLengthError",
    "CollateShapeError",
    "CollateStructureError",
    "CollateTypeError",
]


class CollateError(Exception):
    """Base class of every error fastcollate raises."""


class CollateTypeError(CollateError, TypeError):
    """A sample holds something that cannot be batched (object arrays, nested or sparse tensors, GPU tensors...)."""


class CollateShapeError(CollateError, ValueError, RuntimeError):
    """Samples whose tensors differ in shape where they must be equal (or a buffer of the wrong size); also a
    RuntimeError, which ``torch.stack`` raises for ragged shapes in ``default_collate``."""


class CollateDtypeError(CollateError, ValueError):
    """Samples whose tensors have different dtypes."""


class CollateStructureError(CollateError, ValueError):
    """A sample whose nesting (keys, lengths, container types) differs from sample 0's.

    The instance raised is also the built-in ``default_collate`` raises in that case: a ``KeyError`` for a missing
    key, a ``RuntimeError`` for a list or tuple of another length, a ``TypeError`` for another kind of container.
    """


class CollateKeyError(CollateStructureError, KeyError):
    """A sample missing a key of sample 0 (``default_collate`` raises a KeyError)."""

    def __str__(self) -> str:  # KeyError's own __str__ would quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class CollateLengthError(CollateStructureError, RuntimeError):
    """A list or tuple of another length than sample 0's (``default_collate`` raises a RuntimeError)."""


class CollateContainerError(CollateStructureError, TypeError):
    """A sample with another kind of container (or none) where sample 0 has a dict, list or tuple
    (``default_collate`` raises a TypeError)."""


class CollateIndexError(CollateError, IndexError):
    """A gather index outside the dataset."""
