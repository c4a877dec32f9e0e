"""Unit tests of the small modules: device transfer, AMP resolution, history, model adapter, public API."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, namedtuple
from typing import Any

import pytest
import torch
from torch import nn

import aitoolbox.loop
import aitoolbox.loop.callbacks
from aitoolbox.loop import (
    LoopConfigError,
    ModelNotSupportedError,
    ModelWrap,
    TrainingHistory,
    TTModel,
    as_ttmodel,
    move_to_device,
    resolve_amp,
    resolve_device,
)

Pair = namedtuple("Pair", ["a", "b"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    label: str


def test_move_to_device_keeps_structure() -> None:
    batch = {
        "p": Pair(torch.ones(1), [torch.zeros(2), 3]),
        "o": OrderedDict(k=torch.ones(1)),
        "d": Batch(torch.ones(2), "s"),
    }
    out = move_to_device(batch, torch.device("cpu"))
    assert isinstance(out["p"], Pair) and isinstance(out["o"], OrderedDict) and isinstance(out["d"], Batch)
    assert out["p"].b[1] == 3 and out["d"].label == "s"
    assert out["p"].a is batch["p"].a  # already on the device: same tensor


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(LoopConfigError, match="device must be"):
        resolve_device("gpu!")


@pytest.mark.parametrize(
    ("spec", "dtype", "scaler"),
    [
        (False, None, False),
        (None, None, False),
        ("fp16", torch.float16, False),  # no GradScaler on CPU
        (torch.bfloat16, torch.bfloat16, False),
        ({"dtype": "fp16", "grad_scaler": True}, torch.float16, True),
    ],
)
def test_resolve_amp_cpu(spec: object, dtype: torch.dtype | None, scaler: bool) -> None:
    cfg = resolve_amp(spec, torch.device("cpu"))
    assert (cfg.dtype, cfg.use_grad_scaler, cfg.enabled) == (dtype, scaler, dtype is not None)


def test_resolve_amp_cuda_defaults_to_fp16_with_scaler() -> None:
    cfg = resolve_amp(True, torch.device("cuda", 0))
    assert cfg.dtype == torch.float16 and cfg.use_grad_scaler
    assert not resolve_amp("bf16", torch.device("cuda", 0)).use_grad_scaler


def test_amp_dicts_of_the_original_and_grad_scaler_settings() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    original = resolve_amp({"init_scale": 1024.0, "growth_interval": 100}, cuda)  # AIToolbox 1.8's GradScaler kwargs
    assert (original.dtype, original.use_grad_scaler) == (torch.float16, True)
    assert original.scaler_options == {"init_scale": 1024.0, "growth_interval": 100}
    with pytest.raises(LoopConfigError, match=r"1.8's GradScaler settings\) means float16 .* on the CPU use"):
        resolve_amp({"init_scale": 1024.0}, cpu)
    for apex in ({"opt_level": "O1"}, {"opt_level": "O2", "loss_scale": "dynamic"}):
        with pytest.raises(LoopConfigError, match="apex amp.initialize setting .* apex is not used: use_amp=True"):
            resolve_amp(apex, cuda)
    settings = resolve_amp({"dtype": "fp16", "grad_scaler": {"init_scale": 8.0}}, cpu)  # honoured where it scales
    assert settings.use_grad_scaler and settings.scaler_options == {"init_scale": 8.0}
    with pytest.raises(LoopConfigError, match="GradScaler settings apply to float16, and this run autocasts to"):
        resolve_amp({"grad_scaler": {"init_scale": 8.0}}, cpu)  # bfloat16 on the CPU: the settings would be dropped
    with pytest.raises(LoopConfigError, match=r"GradScaler settings are \['init_scale'"):
        resolve_amp({"dtype": "fp16", "grad_scaler": {"init_scal": 8.0}}, cpu)
    with pytest.raises(LoopConfigError, match="a GradScaler needs float16 AMP"):
        resolve_amp({"dtype": False, "grad_scaler": True}, cpu)


def test_training_history() -> None:
    h = TrainingHistory({"loss": [1.0]})
    h.insert_single_result_into_history("loss", 0.5)
    h.insert_single_result_into_history("val_acc", 0.9)
    assert dict(h) == {"loss": [1.0, 0.5], "val_acc": [0.9]}
    copy = h.to_dict()
    copy["loss"].append(9)
    assert h["loss"] == [1.0, 0.5]
    restored = TrainingHistory()
    restored.load_state_dict(h.state_dict())
    assert restored == h and restored.get_last("missing", 7) == 7
    assert TrainingHistory.is_finite(1.0) and not TrainingHistory.is_finite(float("nan"))


def test_model_wrap_and_as_ttmodel() -> None:
    lin = nn.Linear(3, 2)
    wrapped = as_ttmodel(lin)
    assert isinstance(wrapped, ModelWrap) and wrapped.module is lin
    x, y = torch.ones(4, 3), torch.tensor([0, 1, 0, 1])
    assert torch.equal(wrapped.get_predictions((x, y), torch.device("cpu"))[0], lin(x))
    two_inputs = ModelWrap(nn.Bilinear(3, 3, 2))
    loss = two_inputs.get_loss((x, x, y), nn.CrossEntropyLoss(), torch.device("cpu"))
    assert loss.dim() == 0
    with pytest.raises(ModelNotSupportedError, match="batches must be \\(inputs..., target\\)"):
        wrapped.get_loss(x, nn.CrossEntropyLoss(), torch.device("cpu"))
    with pytest.raises(LoopConfigError, match="num_inputs must be a positive int"):
        ModelWrap(lin, num_inputs=0)
    with pytest.raises(TypeError):
        TTModel()  # abstract: get_loss and get_predictions are required


def test_public_api_is_pinned() -> None:
    assert sorted(aitoolbox.loop.__all__) == sorted(
        """AbstractModelFeedDefinition AmpConfig CallableBool DDP DataOrderLog ElasticSampler FSDP2 LoopConfigError
        LoopError LoopState LoopView ModelNotSupportedError ModelWrap MultiLoss MultiOptimizer
        NonFiniteLossError Preempted Preemption
        ResumeMismatchError Runtime SingleDevice Strategy TTBasicModel TTModel TrainLoop TrainingHistory __version__
        as_ttmodel move_to_device resolve_amp resolve_device resolve_mode""".split()
    )
    assert sorted(aitoolbox.loop.callbacks.__all__) == sorted(
        """AbstractCallback Callback EarlyStopping Every GradNormClip GradValueClip LRSchedulerCallback ProgressBar
        ProgressLog TerminateOnNaN""".split()
    )
    for name in aitoolbox.loop.__all__:
        assert hasattr(aitoolbox.loop, name)


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch; before = set(sys.modules); import aitoolbox.loop, aitoolbox.loop.callbacks; "
        "added = {m.split('.')[0] for m in set(sys.modules) - before}; print(sorted(added))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['aitoolbox']"  # nothing beyond torch (tqdm, numpy... are imported lazily or by torch itself)


def test_a_dataclass_batch_weighs_its_rows_in_the_evaluation_loss() -> None:
    import dataclasses

    from torch import optim
    from torch.utils.data import DataLoader

    from aitoolbox.loop import TrainLoop
    from aitoolbox.loop.testing import TinyClassifier, make_classification_data

    @dataclasses.dataclass
    class Batch:
        name: str
        x: torch.Tensor
        y: torch.Tensor

    def collate(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        return Batch("rows", torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]))

    class OnBatches(TinyClassifier):
        def get_loss(self, batch: Any, criterion: Any, device: Any) -> torch.Tensor:
            return super().get_loss((batch.x, batch.y), criterion, device)

    data = make_classification_data(40)
    model = OnBatches()
    criterion = nn.CrossEntropyLoss()
    val = DataLoader(data, batch_size=32, collate_fn=collate)  # batches of 32 and 8 rows
    tl = TrainLoop(model, val, val, None, optim.SGD(model.parameters(), lr=0.1), criterion, device="cpu")
    x, y = data.tensors
    with torch.no_grad():
        expected = (criterion(model(x[:32]), y[:32]) * 32 + criterion(model(x[32:]), y[32:]) * 8).item() / 40
    assert tl.evaluate_loss_on_validation_set() == pytest.approx(expected, rel=1e-6)


def test_one_int_check_refuses_bools_everywhere() -> None:
    from torch import nn

    from aitoolbox.loop import LoopConfigError, ModelWrap
    from aitoolbox.loop.callbacks import EarlyStopping, TerminateOnNaN
    from aitoolbox.loop.errors import check_int

    with pytest.raises(LoopConfigError, match="num_inputs must be a positive int or None, got True"):
        ModelWrap(nn.Linear(2, 2), num_inputs=True)
    with pytest.raises(LoopConfigError, match="check_every must be a positive int or None, got True"):
        TerminateOnNaN(check_every=True)
    with pytest.raises(LoopConfigError, match="patience must be an int >= 0, got False"):
        EarlyStopping(patience=False)
    assert check_int("n", None, 1, optional=True) is None and check_int("n", 3, 1) == 3
