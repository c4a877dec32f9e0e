"""The plan codes and error classes Python and Rust share (``src/protocol.rs``), pinned on the Python side."""

from __future__ import annotations

import pytest
import torch

import fastcollate
from fastcollate import _native, _plan, errors


def test_plan_codes_are_rusts_and_pinned() -> None:
    assert _native.PLAN_CODES == {"OBJ": 0, "INT": 1, "FLOAT": 2, "BOOL": 3, "SEQ": 4, "MAP": 5}
    assert (_plan.OBJ, _plan.INT, _plan.FLOAT, _plan.BOOL, _plan.SEQ, _plan.MAP) == (0, 1, 2, 3, 4, 5)


def test_a_plan_is_built_from_the_shared_codes() -> None:
    leaves: list[tuple[str, str]] = []
    spec, _ = _plan.plan({"x": torch.zeros(2), "n": [1, 2.0, True]}, "", leaves)
    codes = _native.PLAN_CODES
    assert spec == (
        codes["MAP"],
        ("x", "n"),
        (codes["OBJ"], (codes["SEQ"], (codes["INT"], codes["FLOAT"], codes["BOOL"]))),
    )
    assert [kind for kind, _ in leaves] == ["tensor", "int", "float", "bool"]


def test_every_error_class_rust_raises_exists() -> None:
    assert set(_native.ERROR_CLASSES) >= {"CollateTypeError", "CollateShapeError", "CollateKeyError"}
    for name in _native.ERROR_CLASSES:
        cls = getattr(errors, name)
        assert issubclass(cls, fastcollate.CollateError)


def test_rust_refuses_a_code_it_does_not_know() -> None:
    with pytest.raises(errors.CollateTypeError, match="unknown leaf code 9"):
        _native.columns([{"x": 1}], (_native.PLAN_CODES["MAP"], ("x",), (9,)))
    with pytest.raises(errors.CollateTypeError, match="unknown node kind 7"):
        _native.columns([(1,)], (7, (1,)))


def test_flags_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        _native.tensor_addresses([torch.zeros(2)], torch.Tensor, torch.float32, [2], False, False)  # type: ignore[misc]
    assert (
        _native.tensor_addresses([torch.zeros(2)], torch.Tensor, torch.float32, [2], vary_first=False, allow_grad=False)
        is not None
    )
