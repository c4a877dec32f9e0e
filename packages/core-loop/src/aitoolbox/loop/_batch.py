"""The one walk over a batch's structure (tuples, namedtuples, lists, mappings, dataclasses) that device moves,
pinning checks, CUDA stream records and batch-size counting share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["first_array", "infer_batch_size", "is_array", "leaves", "map_tensors"]


def _rebuild_mapping(batch: Mapping[Any, Any], items: dict[Any, Any]) -> Any:
    try:
        return type(batch)(items)  # type: ignore[call-arg]  # keeps OrderedDict / BatchEncoding-like mappings
    except TypeError:
        return items


def _children(batch: Any) -> tuple[list[Any], Callable[[list[Any]], Any]] | None:
    """A container's children and how to rebuild it from new ones; ``None`` for a leaf."""
    if isinstance(batch, tuple):
        if hasattr(batch, "_fields"):
            return list(batch), lambda new: type(batch)(*new)
        return list(batch), tuple
    if isinstance(batch, list):
        return batch, list
    if isinstance(batch, Mapping):
        keys = list(batch)
        return [batch[k] for k in keys], lambda new: _rebuild_mapping(batch, dict(zip(keys, new, strict=True)))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        names = [f.name for f in dataclasses.fields(batch)]
        return [getattr(batch, n) for n in names], lambda new: dataclasses.replace(
            batch, **dict(zip(names, new, strict=True))
        )
    return None


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it; other leaves (strings, numbers) are kept as they are.

    Example:
        >>> import torch
        >>> map_tensors({"x": torch.ones(2), "ids": [1, 2]}, lambda t: t * 2)["x"].tolist()
        [2.0, 2.0]
    """
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    parts = _children(batch)
    if parts is None:
        return batch
    children, rebuild = parts
    return rebuild([map_tensors(c, fn) for c in children])


def is_array(obj: object) -> bool:
    """A tensor or an array-like with ``shape`` and ``dtype`` (numpy)."""
    return isinstance(obj, torch.Tensor) or (hasattr(obj, "shape") and hasattr(obj, "dtype"))


def leaves(batch: Any) -> Iterator[Any]:
    """Every leaf of ``batch`` in order (depth first), containers excluded."""
    parts = None if isinstance(batch, torch.Tensor) else _children(batch)
    if parts is None:
        yield batch
        return
    for child in parts[0]:
        yield from leaves(child)


def first_array(batch: Any) -> Any | None:
    """The first tensor or array in ``batch``, or ``None``."""
    return next((leaf for leaf in leaves(batch) if is_array(leaf)), None)


def infer_batch_size(batch: Any) -> int:
    """The first dimension of the first tensor (or array) in ``batch``, dataclasses included; else the length of a
    tuple or list batch, else 1.

    Example:
        >>> import torch
        >>> infer_batch_size((torch.zeros(5, 3), torch.zeros(5)))
        5
    """
    first = first_array(batch)
    if first is not None:
        return int(first.shape[0]) if len(first.shape) else 1
    if isinstance(batch, (tuple, list)):
        return len(batch) or 1
    return 1
