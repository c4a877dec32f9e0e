"""Loop overhead of TrainLoop.fit against a hand-written PyTorch loop doing the same work, in the same run.

W1: MLP 32->64->10, batch 64, 2,000 steps per epoch, one intra-op thread (overhead dominated).
W2: MLP 256->512->512->10, batch 256, 300 steps per epoch (compute dominated).
W0: nn.Linear(4, 2), batch 2, 200 steps, no validation: almost no compute, so it isolates the loop's own cost per step
    (60 short interleaved rounds: the minimum is robust against this machine's noise, which hides a few us in W1).
All run a validation pass per epoch (W0 excepted) and record the epoch's training loss. TrainLoop draws its progress
bar (to /dev/null) and keeps its history. Batches are pre-collated in memory so that only the loop is measured.
Each timed TrainLoop epoch is preceded by one hand-written epoch (see ``interleaved_baseline`` in conftest.py).
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn, optim

from aitoolbox.torchtrain.callbacks import ProgressBar
from aitoolbox.torchtrain.train_loop import TrainLoop

sys.path.insert(0, os.path.dirname(__file__))
from _scale import scaled

WORKLOADS = {
    "W0": {"dims": [4, 2], "batch": 2, "steps": scaled(200, 20), "val_steps": 0, "threads": 1, "rounds": 60},
    "W1": {
        "dims": [32, 64, 10],
        "batch": 64,
        "steps": scaled(2000, 20),
        "val_steps": scaled(50, 2),
        "threads": 1,
        "rounds": 15,
    },
    "W2": {
        "dims": [256, 512, 512, 10],
        "batch": 256,
        "steps": scaled(300, 5),
        "val_steps": scaled(20, 2),
        "threads": None,
        "rounds": 11,
    },
}


def _mlp(dims: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _batches(dims: list[int], batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, dims[0], generator=g), torch.randint(0, dims[-1], (batch,), generator=g)) for _ in range(n)
    ]


def hand_written_epoch(
    model: nn.Module, train: list[Any], val: list[Any], opt: optim.Optimizer, crit: nn.Module
) -> tuple[float, float]:
    """What a practitioner writes: train, record the epoch loss, evaluate the validation loss."""
    model.train()
    running = 0.0
    for x, y in train:
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        running += loss.item()
    if not val:
        return running / len(train), float("nan")
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in val:
            total += crit(model(x), y).item() * len(y)
            count += len(y)
    return running / len(train), total / count


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_trainloop_fit_vs_hand_written(benchmark: Any, interleaved_baseline: Any, name: str) -> None:
    cfg = WORKLOADS[name]
    previous = torch.get_num_threads()
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    try:
        train = _batches(cfg["dims"], cfg["batch"], cfg["steps"], seed=0)
        val = _batches(cfg["dims"], cfg["batch"], cfg["val_steps"], seed=1)
        torch.manual_seed(0)
        ref_model = _mlp(cfg["dims"])
        ref_opt = optim.Adam(ref_model.parameters(), lr=1e-3)
        crit = nn.CrossEntropyLoss()
        torch.manual_seed(0)
        model = _mlp(cfg["dims"])
        tl = TrainLoop(model, train, val or None, None, optim.Adam(model.parameters(), lr=1e-3), crit, device="cpu")

        benchmark.group = name
        benchmark.extra_info.update(
            workload=name, candidate="TrainLoop.fit (bar + history)", baseline="hand-written loop", steps=cfg["steps"]
        )
        setup = interleaved_baseline(benchmark, lambda: hand_written_epoch(ref_model, train, val, ref_opt, crit))
        with open(os.devnull, "w") as devnull:
            bar = ProgressBar(file=devnull)
            benchmark.pedantic(
                lambda: tl.fit(num_epochs=1, callbacks=[bar]), setup=setup, rounds=cfg["rounds"], warmup_rounds=1
            )
    finally:
        torch.set_num_threads(previous)
    # both did the same training: same data, same init, same optimizer, one hand-written epoch per TrainLoop epoch
    assert tl.epochs_done == len(benchmark.extra_info["baseline_times"])
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def _import_time(statement: str, repeats: int = scaled(5, 1)) -> float:
    times = []
    for _ in range(repeats):
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        times.append(float(out))
    return statistics.median(times)


def _own_import_time(module: str) -> float:
    """Cumulative import time of ``module`` after torch is loaded, from ``python -X importtime`` (seconds)."""
    code = f"import torch; import {module}"
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    ).stderr
    for line in err.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1e6
    raise AssertionError(f"{module} not in the -X importtime output")


def _after_torch(module: str) -> tuple[float, float]:
    """Wall-clock seconds of ``import torch`` and then of ``import module``, in one fresh interpreter."""
    code = (
        "import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
        f"import {module}; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def test_import_cost_over_torch(report: Any) -> None:
    """The import is timed inside the interpreter that already imported torch: comparing two separate interpreters
    would drown it in torch's own run-to-run noise (5.4 to 6.5 s measured here)."""
    _after_torch("aitoolbox.torchtrain.train_loop")  # warm the page cache
    runs = [_after_torch("aitoolbox.torchtrain.train_loop") for _ in range(scaled(5, 1))]
    own = statistics.median(r[1] for r in runs)
    by_importtime = statistics.median(_own_import_time("aitoolbox.torchtrain.train_loop") for _ in range(scaled(3, 1)))
    report(
        f"import aitoolbox.torchtrain.train_loop after torch: {own:.3f} s wall clock (median of {len(runs)} fresh "
        "interpreters; "
        f"torch itself {statistics.median(r[0] for r in runs):.2f} s), {by_importtime:.3f} s by -X importtime"
    )
