"""aitoolbox.checkpointing.compat: a saved state that does not fit is named before anything loads; the state dict of
a torch.compile(model) (``_orig_mod.`` keys) loads into the eager model, with a warning."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from aitoolbox.checkpointing import CheckpointIncompatibleError
from aitoolbox.checkpointing.compat import load_model_state, without_compile_prefix


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_a_compiled_models_state_loads_into_the_eager_model(caplog: pytest.LogCaptureFixture) -> None:
    source, target = _model(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    prefixed = {f"_orig_mod.{k}": v for k, v in source.state_dict().items()}  # what torch.compile(model) saves
    with caplog.at_level(logging.WARNING):
        load_model_state(target, prefixed, "ckpt-e0001")
    pairs = zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert any("_orig_mod." in r.getMessage() and "ckpt-e0001" in r.getMessage() for r in caplog.records)


def test_the_prefix_is_kept_where_the_model_has_it_or_only_some_keys_carry_it() -> None:
    own = {"_orig_mod.0.weight": torch.zeros(1)}
    assert without_compile_prefix(own, own, "x") is own
    mixed = {"_orig_mod.0.weight": torch.zeros(1), "0.bias": torch.zeros(1)}
    assert without_compile_prefix({"0.weight": torch.zeros(1)}, mixed, "x") is mixed


def test_another_architecture_is_still_refused_after_the_prefix() -> None:
    prefixed = {f"_orig_mod.{k}": v for k, v in _model().state_dict().items()}
    with pytest.raises(CheckpointIncompatibleError, match="missing in the checkpoint: 1.bias"):
        load_model_state(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), prefixed, "ckpt")
