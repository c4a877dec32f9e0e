"""Whether a state is worth keeping: every floating tensor finite (no NaN or infinity in weights or optimizer state)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["first_non_finite"]


def _tensors(obj: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        local = getattr(obj, "to_local", None)  # a DTensor: this rank's shard (no collective)
        obj = local() if local is not None else obj
        if obj.is_floating_point() or obj.is_complex():
            yield path, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{path}[{k!r}]" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}[{i}]")


def first_non_finite(state: Any) -> str | None:
    """The path of the first floating tensor of ``state`` holding a NaN or an infinity, or ``None`` when all are
    finite. One host-device sync per device, however many tensors. A DTensor counts its local shard: in a
    sharded state each rank checks its own (and the ranks agree on the verdict).

    Example:
        >>> first_non_finite({"model": {"w": torch.ones(2), "b": torch.tensor([0.0, float("nan")])}})
        "model['b']"
        >>> first_non_finite({"model": {"w": torch.ones(2)}, "step": 3}) is None
        True
    """
    found = list(_tensors(state, ""))
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(found):
        by_device.setdefault(t.device, []).append(i)
    bad: list[int] = []
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(found[i][1]).all() for i in indices])
        if not bool(flags.all()):
            bad += [i for i, ok in zip(indices, flags.tolist(), strict=True) if not ok]
    return found[min(bad)][0] if bad else None
