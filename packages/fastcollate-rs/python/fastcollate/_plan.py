"""The plan of a batch: the structure of its first sample (dicts, lists, tuples, namedtuples down to the leaves),
as Rust's transposition reads it (``src/protocol.rs`` owns the codes), and how to rebuild the batch from columns."""

from __future__ import annotations

from typing import Any

import torch

from fastcollate import _native

__all__ = ["MAP", "OBJ", "SEQ", "Unsupported", "flat_plan", "is_numpy", "plan"]

# the plan codes are Rust's (src/protocol.rs): a code renamed there fails here, at import
OBJ, INT, FLOAT, BOOL, SEQ, MAP = (_native.PLAN_CODES[n] for n in ("OBJ", "INT", "FLOAT", "BOOL", "SEQ", "MAP"))


class Unsupported(Exception):
    """The first sample holds something this module leaves to default_collate."""


def is_numpy(obj: object) -> bool:
    return type(obj).__module__ == "numpy"


def plan(elem: Any, path: str, leaves: list[tuple[str, str]], zipped: bool = False) -> tuple[Any, Any]:
    """Returns (spec for Rust, tree for rebuilding) and appends (kind, path) per leaf, depth first.

    ``zipped``: the leaf's column is built by ``zip`` in default_collate (inside a sequence), so a column it
    returns as-is (strings) is a tuple there, and a list elsewhere.
    """
    kind = type(elem)
    if isinstance(elem, torch.Tensor):
        leaves.append(("tensor", path))
        return OBJ, ("leaf",)
    if kind is int:
        leaves.append(("int", path))
        return INT, ("leaf",)
    if kind is float:
        leaves.append(("float", path))
        return FLOAT, ("leaf",)
    if kind is bool:
        leaves.append(("bool", path))
        return BOOL, ("leaf",)
    if kind is str or kind is bytes:
        leaves.append(("str_tuple" if zipped else "str", path))
        return OBJ, ("leaf",)
    if is_numpy(elem):
        import numpy as np

        if isinstance(elem, np.ndarray) and elem.shape != ():
            leaves.append(("ndarray", path))
            return OBJ, ("leaf",)
        if isinstance(elem, np.generic):
            leaves.append(("npscalar", path))
            return OBJ, ("leaf",)
        raise Unsupported
    if isinstance(elem, dict):
        keys = tuple(elem)
        children = [plan(elem[k], f"{path}[{k!r}]", leaves) for k in keys]
        return (MAP, keys, tuple(c[0] for c in children)), ("map", elem, keys, [c[1] for c in children])
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        children = [plan(v, f"{path}.{f}", leaves, True) for f, v in zip(elem._fields, elem, strict=True)]
        return (SEQ, tuple(c[0] for c in children)), ("namedtuple", kind, [c[1] for c in children])
    if isinstance(elem, (tuple, list)):
        children = [plan(v, f"{path}[{i}]", leaves, True) for i, v in enumerate(elem)]
        shape = "tuple" if isinstance(elem, tuple) else "list"
        return (SEQ, tuple(c[0] for c in children)), (shape, elem, [c[1] for c in children])
    raise Unsupported


# Leaf types of a "flat" sample (a dict, tuple or list holding only these, exactly): its plan is cached.
FLAT_LEAF_TYPES = frozenset({torch.Tensor, int, float, bool, str, bytes})
MAX_FLAT_PLANS = 64
_flat_plans: dict[tuple[Any, ...], tuple[Any, tuple[tuple[str, str], ...]] | None] = {}


def flat_plan(elem: Any) -> tuple[tuple[Any, ...] | None, Any, tuple[tuple[str, str], ...]] | None:
    """(the dict's keys or None, spec, leaves) when ``elem`` is a plain dict, tuple or list of plain leaves.

    The plan depends only on the keys and the exact leaf types, so it is looked up by them instead of being
    rebuilt per batch (planning costs several microseconds, the lookup a fraction of one). None for anything
    else (nesting, namedtuples, numpy, subclasses), which then takes the general path.
    """
    kind = type(elem)
    if kind is dict:
        keys: tuple[Any, ...] | None = tuple(elem)
        signature: tuple[Any, ...] = (keys, *map(type, elem.values()))
    elif kind is tuple or kind is list:
        keys = None
        signature = (kind, *map(type, elem))
    else:
        return None
    try:
        cached = _flat_plans[signature]
    except KeyError:
        cached = None
        if FLAT_LEAF_TYPES.issuperset(signature[1:]):
            leaves: list[tuple[str, str]] = []
            spec, _ = plan(elem, "", leaves)
            cached = (spec, tuple(leaves))
        if len(_flat_plans) >= MAX_FLAT_PLANS:
            _flat_plans.clear()
        _flat_plans[signature] = cached
    if cached is None:
        return None
    return keys, cached[0], cached[1]
