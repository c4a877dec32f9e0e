"""On a CUDA machine: batches per second into the GPU for workload (a), DataLoader(pin_memory=True) with
default_collate against fastcollate's pinned path.

default_collate stacks into fresh pageable memory, then the DataLoader's pin-memory thread copies the whole batch
again into pinned memory. fastcollate stacks straight into pinned memory (PyTorch's caching host allocator), so the
pin thread's ``pin_memory()`` returns the batch as it is. Each batch is then sent with ``non_blocking=True``, as a
training loop does; the clock stops after a device synchronisation.

With workers, ``fastcollate.slot_loader`` (0.2) is timed too: the workers collate into shared slots registered with
CUDA, so neither the hand-over nor the pin thread copies the batch.

Run: ``python benchmarks/collate_pinned_gpu.py`` (needs fastcollate importable, e.g. ``uv run``; prints JSON).
The loaders run interleaved, ``ROUNDS`` epochs each, with ``num_workers`` 0, 4 and 8, for (a) with 64 and 256
samples per batch; outputs are checked equal.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import Cycled, assert_equal, samples

BATCHES, ROUNDS = 40, 5


def _epoch(loader: DataLoader[Any]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in loader:
        x.to("cuda", non_blocking=True)
        y.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> dict[str, Any]:
    from torch.utils.data import default_collate

    import fastcollate

    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "batches": BATCHES}
    for workload in ("a64", "a256"):
        items = samples(workload)
        dataset = Cycled(items, len(items) * BATCHES)
        for workers in (0, 4, 8):
            extra = {"batch_size": len(items), "pin_memory": True, "num_workers": workers}
            extra["persistent_workers"] = workers > 0
            loaders = {
                "default_collate+pin_memory": DataLoader(dataset, collate_fn=default_collate, **extra),
                "fastcollate (pinned)": DataLoader(dataset, collate_fn=fastcollate.collate, **extra),
            }
            if workers:
                loaders["slot_loader"] = fastcollate.slot_loader(loaders["default_collate+pin_memory"])
            expected = next(iter(loaders["default_collate+pin_memory"]))
            for loader in loaders.values():
                assert_equal(next(iter(loader)), expected)
                _epoch(loader)  # warm-up: workers, caching host allocator, slots
            times: dict[str, list[float]] = {name: [] for name in loaders}
            for _ in range(ROUNDS):
                for name, loader in loaders.items():
                    times[name].append(_epoch(loader))
            base = min(times["default_collate+pin_memory"])
            row = {f"{name} batches/s": BATCHES / min(t) for name, t in times.items()}
            row.update({f"{name} speedup (by min)": base / min(t) for name, t in times.items()})
            result[f"{workload} workers={workers}"] = row
    return result


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    print(json.dumps(main(), indent=2))
