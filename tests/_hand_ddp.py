"""A hand-written DistributedDataParallel training loop on the CPU (gloo), the reference the compat port of the
original's ``TestDDPCPUTrainLoopVSCorePyTorch`` compares the TrainLoop's ``gpu_mode='ddp'`` with. Run by
``torch.multiprocessing.spawn``; rank 0 saves the trained weights."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


class FFNet(nn.Module):
    """The original test's feed-forward net."""

    def __init__(self) -> None:
        super().__init__()
        self.ff_1, self.ff_2, self.ff_3 = nn.Linear(50, 100), nn.Linear(100, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.ff_3(F.relu(self.ff_2(F.relu(self.ff_1(x))))), dim=1)


def train(
    rank: int,
    world_size: int,
    port: int,
    init: dict[str, torch.Tensor],
    data: TensorDataset,
    batch_size: int,
    num_epochs: int,
    out: str,
) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        # the user's loader is not shuffled, so each rank takes every other sample in order
        sampler: DistributedSampler[Any] = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=False)
        loader = DataLoader(data, batch_size=batch_size, sampler=sampler)
        model = FFNet()
        model.load_state_dict(init)
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=0.001, betas=(0.9, 0.999))
        ddp.train()
        for epoch in range(num_epochs):
            sampler.set_epoch(epoch)
            for x, y in loader:
                loss = F.nll_loss(ddp(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()
