"""The public surface is pinned: adding or removing a name is a reviewed change with a changelog line."""

from __future__ import annotations

import pathlib
import re

import pytest

import fastcollate


def test_all_is_pinned() -> None:
    assert sorted(fastcollate.__all__) == [
        "BatchedTensorDataset",
        "BufferRing",
        "CollateContainerError",
        "CollateDtypeError",
        "CollateError",
        "CollateIndexError",
        "CollateKeyError",
        "CollateLengthError",
        "CollateShapeError",
        "CollateStructureError",
        "CollateTypeError",
        "PaddedBatch",
        "SlotDataLoader",
        "__version__",
        "batch_sampler",
        "collate",
        "get_num_threads",
        "get_worker_packing",
        "pad_collate",
        "release_buffers",
        "set_num_threads",
        "set_worker_packing",
        "slot_loader",
    ]


def test_version_comes_from_cargo_toml() -> None:
    cargo = (pathlib.Path(__file__).parents[1] / "Cargo.toml").read_text()
    assert fastcollate.__version__ == re.search(r'^version = "(.+)"', cargo, re.M).group(1)


def test_errors_subclass_the_builtins() -> None:
    assert issubclass(fastcollate.CollateShapeError, ValueError)
    assert issubclass(fastcollate.CollateShapeError, RuntimeError)  # what torch.stack raises in default_collate
    for error, builtin in (
        (fastcollate.CollateKeyError, KeyError),
        (fastcollate.CollateLengthError, RuntimeError),
        (fastcollate.CollateContainerError, TypeError),
    ):
        assert issubclass(error, fastcollate.CollateStructureError) and issubclass(error, builtin)
    assert issubclass(fastcollate.CollateTypeError, TypeError)
    assert issubclass(fastcollate.CollateIndexError, IndexError)
    assert all(
        issubclass(e, fastcollate.CollateError)
        for e in (fastcollate.CollateShapeError, fastcollate.CollateDtypeError, fastcollate.CollateStructureError)
    )


def test_thread_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="num_threads must be a positive int or None, got 0"):
        fastcollate.set_num_threads(0)
    fastcollate.set_num_threads(3)
    assert fastcollate.get_num_threads() == 3
    fastcollate.set_num_threads(None)
    assert 1 <= fastcollate.get_num_threads() <= 8


def test_native_rejects_bad_layouts_without_touching_memory() -> None:
    from fastcollate import _native

    with pytest.raises(fastcollate.CollateShapeError, match="output buffer has 10 bytes, expected 8"):
        _native.stack_into((0x1000, 10), [0x9000, 0xA000], 4, 1)
    with pytest.raises(fastcollate.CollateShapeError, match="null address"):
        _native.stack_into((0, 8), [0x9000, 0xA000], 4, 1)
    with pytest.raises(fastcollate.CollateShapeError, match="overlaps the output"):
        _native.stack_into((0x1000, 8), [0x1004, 0xA000], 4, 1)
