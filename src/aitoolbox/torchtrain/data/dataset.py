"""Two small datasets of the original AIToolbox, for data already in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from aitoolbox.loop import LoopConfigError

__all__ = ["BasicDataset", "ListDataset"]


class BasicDataset(Dataset[Any]):
    """Items of one indexable collection (a list, an array, a tensor): ``dataset[i]`` is ``data[i]``.

    Example:
        >>> BasicDataset([10, 20, 30])[1]
        20
    """

    def __init__(self, data: Sequence[Any]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> Any:
        return self.data[idx]


class ListDataset(Dataset[tuple[Any, ...]]):
    """Zips equally long collections: ``dataset[i]`` is ``(first[i], second[i], ...)``.

    Example:
        >>> ListDataset([1, 2], ["a", "b"])[1]
        (2, 'b')
    """

    def __init__(self, *data_lists: Sequence[Any]) -> None:
        if not data_lists:
            raise LoopConfigError("ListDataset needs at least one collection: ListDataset(inputs, targets)")
        lengths = sorted({len(d) for d in data_lists})
        if len(lengths) > 1:
            raise LoopConfigError(
                f"ListDataset's collections differ in length ({[len(d) for d in data_lists]}); give equally long ones"
            )
        self.data_lists = data_lists

    def __len__(self) -> int:
        return len(self.data_lists[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(d[index] for d in self.data_lists)
