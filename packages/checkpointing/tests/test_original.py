"""Reading checkpoints in the original AIToolbox 1.8 format (one ``.pth`` dict per checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from aitoolbox.checkpointing.errors import CheckpointIncompatibleError, CheckpointNotFoundError
from aitoolbox.checkpointing.original import PyTorchLocalModelLoader

STAMP = "2023-05-01_10-00-00"


def trained() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR, torch.amp.GradScaler]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    return model, opt, sched, scaler


def write_original(root: Path, hyperparams: dict[str, object], prefix: str = "") -> Path:
    model, opt, sched, scaler = trained()
    folder = root / "proj" / f"exp_{STAMP}" / "checkpoint_model"
    folder.mkdir(parents=True)
    path = folder / f"model_exp_{STAMP}_E4.pth"
    torch.save(
        {
            "model_state_dict": {prefix + k: v for k, v in model.state_dict().items()},
            "optimizer_state_dict": opt.state_dict(),
            "schedulers_state_dict": [sched.state_dict()],
            "epoch": 4,
            "iteration_idx": 49,
            "hyperparams": hyperparams,
            "amp": scaler.state_dict(),
        },
        path,
    )
    return path


def test_load_an_original_checkpoint_into_model_optimizer_scheduler_and_scaler(tmp_path: Path) -> None:
    write_original(tmp_path, {"lr": 0.01, "batch_size": 32})
    loader = PyTorchLocalModelLoader(tmp_path)
    saved = loader.load_model("proj", "exp", STAMP, epoch_num=4)
    assert saved["epoch"] == 4 and saved["hyperparams"] == {"lr": 0.01, "batch_size": 32}
    reference, ref_opt, ref_sched, _ = trained()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu")
    loader.init_model(model)
    loader.init_optimizer(opt)
    loader.init_scheduler([sched])
    loader.init_amp(scaler)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    torch.testing.assert_close(opt.state_dict()["state"], ref_opt.state_dict()["state"])
    assert sched.state_dict() == ref_sched.state_dict() and scaler.get_scale() == 1024.0


def test_data_parallel_keys_wrapped_modules_and_refusals(tmp_path: Path) -> None:
    path = write_original(tmp_path, {}, prefix="module.")
    loader = PyTorchLocalModelLoader(tmp_path)
    loader.load_model_from_path(path)
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loader.init_model(plain, used_data_parallel=True)

    class Wrap(nn.Module):  # like ModelWrap: the weights belong to .module
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    wrapped = Wrap()
    loader.init_model(wrapped, used_data_parallel=True)
    assert torch.equal(wrapped.module[0].weight, plain[0].weight)
    with pytest.raises(CheckpointIncompatibleError, match="missing in the checkpoint"):
        loader.init_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))  # the prefix left on
    with pytest.raises(CheckpointIncompatibleError, match="holds scheduler states but no schedulers were given"):
        loader.init_scheduler([])
    with pytest.raises(CheckpointNotFoundError, match="no original AIToolbox checkpoint"):
        loader.load_model("proj", "exp", STAMP, epoch_num=9)


def test_pickled_objects_need_trusted(tmp_path: Path) -> None:
    path = write_original(tmp_path, {"data_dir": Path("/data")})  # a Path: not plain data
    loader = PyTorchLocalModelLoader(tmp_path)
    with pytest.raises(CheckpointIncompatibleError, match="trusted=True"):
        loader.load_model_from_path(path)
    assert loader.load_model_from_path(path, trusted=True)["hyperparams"] == {"data_dir": Path("/data")}
