"""On a CUDA machine: batches per second into the GPU for workload (a), DataLoader(pin_memory=True) with
default_collate against fastcollate's pinned path.

default_collate stacks into fresh pageable memory, then the DataLoader's pin-memory thread copies the whole batch
again into pinned memory. fastcollate stacks straight into pinned memory (PyTorch's caching host allocator), so the
pin thread's ``pin_memory()`` returns the batch as it is. Each batch is then sent with ``non_blocking=True``, as a
training loop does; the clock stops after a device synchronisation.

Run: ``python benchmarks/collate_pinned_gpu.py`` (needs fastcollate importable, e.g. ``uv run``; prints JSON).
Both loaders run interleaved, ``ROUNDS`` epochs each, with ``num_workers`` 0 and 4; outputs are checked equal.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import assert_equal, samples

BATCHES, ROUNDS = 40, 5


class _Samples(Dataset[Any]):
    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.items[i % len(self.items)]


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

    items = samples("a64")
    dataset = _Samples(items, 64 * BATCHES)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "batches": BATCHES, "batch_size": 64}
    for workers in (0, 4):
        extra = {"num_workers": workers, "persistent_workers": workers > 0}
        base = DataLoader(dataset, batch_size=64, pin_memory=True, collate_fn=default_collate, **extra)
        fast = DataLoader(dataset, batch_size=64, pin_memory=True, collate_fn=fastcollate.collate, **extra)
        first = next(iter(fast))
        assert_equal(first, next(iter(base)))
        if workers == 0:
            assert first[0].is_pinned() and first[0].pin_memory().data_ptr() == first[0].data_ptr()
        base_t, fast_t = [], []
        _epoch(base), _epoch(fast)  # warm-up: workers, caching host allocator
        for _ in range(ROUNDS):
            base_t.append(_epoch(base))
            fast_t.append(_epoch(fast))
        result[f"workers={workers}"] = {
            "default_collate+pin_memory batches/s": BATCHES / min(base_t),
            "fastcollate (pinned) batches/s": BATCHES / min(fast_t),
            "speedup (by min)": min(base_t) / min(fast_t),
        }
    return result


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    print(json.dumps(main(), indent=2))
