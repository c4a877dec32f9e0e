"""The loaders the loop iterates: derived copies of the user's, never the user's objects modified."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from aitoolbox.loop import TrainLoop
from aitoolbox.loop._loaders import derive_loader, fast_collate_available
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader


def _loop(**kwargs: object) -> TrainLoop:
    model = TinyClassifier()
    loader = make_classification_loader(64, batch_size=16)
    return TrainLoop(
        model, loader, None, None, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), **kwargs
    )


def test_fast_collate_true_requires_the_package() -> None:
    if fast_collate_available():
        assert _loop(fast_collate=True).fast_collate is True
    else:
        with pytest.raises(LoopConfigError, match="fast_collate=True needs the fastcollate package: pip install"):
            _loop(fast_collate=True)


def test_fast_collate_default_follows_installation_and_bad_values_fail() -> None:
    assert _loop().fast_collate is fast_collate_available()
    assert _loop(fast_collate=False).fast_collate is False
    with pytest.raises(LoopConfigError, match="fast_collate must be True, False or None, got 'yes'"):
        _loop(fast_collate="yes")


def test_derived_loader_keeps_every_option_and_leaves_the_original_alone() -> None:
    generator = torch.Generator().manual_seed(5)
    loader = make_classification_loader(
        64,
        batch_size=8,
        shuffle=True,
        num_workers=1,
        persistent_workers=True,
        prefetch_factor=3,
        drop_last=True,
        generator=generator,
        pin_memory=False,
    )
    derived = derive_loader(loader, collate_fn=default_collate)
    assert loader.collate_fn is default_collate
    for name in (
        "num_workers",
        "persistent_workers",
        "prefetch_factor",
        "drop_last",
        "generator",
        "batch_size",
        "dataset",
        "sampler",
        "pin_memory",
        "timeout",
        "worker_init_fn",
    ):
        assert getattr(derived, name) is getattr(loader, name), name
    assert derived is not loader and derived._iterator is None


def test_without_fastcollate_the_loop_iterates_the_users_loader() -> None:
    tl = _loop(fast_collate=False)
    assert tl.loaders.evaluation("train_loader", tl.train_loader)[0] is tl.train_loader
    assert isinstance(tl.train_loader, DataLoader)
