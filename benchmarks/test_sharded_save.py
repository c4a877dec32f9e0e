"""How long a sharded (FSDP2, DCP) checkpoint blocks the training step: an asynchronous save vs a synchronous one.

Model: 6 x Linear(2048, 2048) (~25 M parameters) sharded with ``fully_shard`` in a process group of one rank (gloo),
its Adam state after one step (~300 MB in all), the state dicts taken through the FSDP2 strategy as the loop does.
The baseline, interleaved round by round, is ``CheckpointManager(background=False).save(sharded=...)``: DCP writes,
hashes and commits before it returns. The candidate is the same save with ``background=True``: it blocks only for
DCP's copy of the shards to CPU memory (``dcp.async_save``); writing, hashing and the commit finish on a thread, on
the checkpoint's own process group (waited for before the next round).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox.checkpointing import CheckpointManager, GroupCollective
from aitoolbox.checkpointing.testing import one_rank_group
from aitoolbox.loop import FSDP2, Runtime

sys.path.insert(0, str(Path(__file__).parent))
from _scale import scaled

WIDTH = scaled(2048, 128)


@pytest.fixture
def group() -> Iterator[GroupCollective]:
    """A process group of one rank, and the sharded saves' own group in it."""
    with one_rank_group() as collective:
        yield collective


def test_sharded_save_blocking_time(
    benchmark: Any, interleaved_baseline: Any, tmp_path: Path, report: Any, group: GroupCollective
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(6)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    strategy = FSDP2()
    strategy.wrap(model, torch.device("cpu"), Runtime())  # a world of one: the group above
    strategy.rebind_optimizers(model, [opt])
    model(torch.randn(2, WIDTH)).sum().backward()
    opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    sync = CheckpointManager(tmp_path / "sync", keep_last=1, background=False, collective=group)
    background = CheckpointManager(tmp_path / "async", keep_last=1, collective=group)
    step = [0]

    def sharded() -> dict[str, Any]:
        return {
            "model": strategy.model_state_dict(model, full=False),
            "optimizer": [strategy.optimizer_state_dict(model, opt, full=False)],
        }

    def baseline() -> None:
        background.wait()  # the candidate's previous background commit must not overlap the baseline
        step[0] += 1
        sync.save({"loop": {"step": step[0]}}, sharded=sharded(), epoch=step[0], iteration=step[0])

    def candidate() -> None:
        step[0] += 1
        background.save({"loop": {"step": step[0]}}, sharded=sharded(), epoch=step[0], iteration=step[0])

    benchmark.group = "checkpoint"
    benchmark.extra_info.update(
        workload="SHARDED", candidate="sharded save, background (blocking part)", baseline="sharded save, synchronous"
    )
    setup = interleaved_baseline(benchmark, baseline)
    benchmark.pedantic(candidate, setup=setup, rounds=4, warmup_rounds=1)
    background.wait()
    info = background.list()[-1]
    size = sum(entry["bytes"] for _, _, entry in info.files()) / 1e9
    report(f"sharded checkpoint of {n_params / 1e6:.0f} M parameters + Adam state: {size:.2f} GB in {info.layout}")
    assert torch.equal(background.load()["model"]["0.weight"], model[0].weight.full_tensor().detach())
