"""``MNIST(root, train=True, transform=None, target_transform=None, download=False)`` with torchvision's interface."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

__all__ = ["MNIST"]

#: samples per split; small so that the original scripts' 5-10 epochs take seconds on a CPU
TRAIN_SIZE = int(os.environ.get("AITB_STANDIN_MNIST_TRAIN", "640"))
TEST_SIZE = int(os.environ.get("AITB_STANDIN_MNIST_TEST", "200"))


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 values 0..16 -> 24x24 (each pixel 3x3) padded to 28x28, 0..255 uint8
    small = (digits.images * (255 / 16)).astype(np.uint8)
    big = np.zeros((len(small), 28, 28), dtype=np.uint8)
    big[:, 2:26, 2:26] = small.repeat(3, axis=1).repeat(3, axis=2)
    return big, digits.target.astype(np.int64)


class MNIST:
    classes: ClassVar[list[str]] = [
        f"{i} - {name}"
        for i, name in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    ]

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        download: bool = False,
    ) -> None:
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        images, labels = _digits()
        split = slice(0, TRAIN_SIZE) if train else slice(TRAIN_SIZE, TRAIN_SIZE + TEST_SIZE)
        self.data, self.targets = images[split], labels[split]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img: Any = self.data[index]
        target: Any = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target
