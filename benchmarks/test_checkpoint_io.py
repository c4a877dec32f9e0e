"""How long a checkpoint blocks the training thread: CheckpointManager.save (background) vs torch.save.

Model: 6 x Linear(4096, 4096) (~101 M parameters) with its Adam state after one step (~1.2 GB in all). The baseline,
interleaved round by round, is a synchronous ``torch.save`` of the same state to the same disk (without fsync, so the
baseline is flattered). The candidate's time is what ``save()`` blocks for: copying the state into reused CPU buffers;
serialisation, fsync and the commit happen on the background thread (and are waited for before the next round).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aitoolbox.checkpointing import CheckpointManager

sys.path.insert(0, str(Path(__file__).parent))
from _scale import scaled

WIDTH = scaled(4096, 256)


def _state() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(6)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, WIDTH)).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_blocking_time(benchmark: Any, interleaved_baseline: Any, tmp_path: Path, report: Any) -> None:
    model, opt = _state()
    n_params = sum(p.numel() for p in model.parameters())
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=1)
    baseline_file = tmp_path / "baseline.pt"
    step = [0]

    def parts() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}

    def baseline() -> None:
        manager.wait()  # the candidate's previous background write must not overlap the baseline
        torch.save(parts(), baseline_file)

    def candidate() -> None:
        step[0] += 1
        manager.save(parts(), epoch=step[0], iteration=step[0])

    benchmark.group = "checkpoint"
    benchmark.extra_info.update(
        workload="CKPT", candidate="CheckpointManager.save (blocking part)", baseline="torch.save (sync)"
    )
    setup = interleaved_baseline(benchmark, baseline)
    benchmark.pedantic(candidate, setup=setup, rounds=4, warmup_rounds=1)
    manager.wait()
    size = sum(f.stat().st_size for f in manager.list()[-1].path.iterdir()) / 1e9
    report(f"checkpoint of {n_params / 1e6:.0f} M parameters + Adam state: {size:.2f} GB on disk per checkpoint")
    loaded = manager.load()
    assert torch.equal(loaded["model"]["0.weight"], model[0].weight.detach())
