"""fastcollate against default_collate (and a pad_sequence collate_fn for (d)), in the main process and in a
DataLoader worker. Each candidate round is preceded by one baseline round (interleaved); outputs are checked equal.

Workloads (see ``_collate_workloads.py``): a64/a256 image tensors, b numpy HWC uint8 images, c 1,024 small rows,
d padded token sequences, e dict samples. ``THP`` re-runs (a) in a child process with ``THP_MEM_ALLOC_ENABLE=1``
(torch then asks for transparent huge pages for its CPU allocations, which removes most page faults of the baseline).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _collate_workloads import assert_equal, collate_fns, samples
from _scale import scaled

# b runs first: right after the (a) runs, default_collate's b output (the same 38.5 MB as a64's) often lands on
# memory that is already faulted in (seen on a 2-core VM; 4x faster rounds), which measures the state the earlier
# benchmark left behind, not a loader's steady state: run alone, every default_collate round of b takes fresh pages.
WORKLOADS = ["b", "a64", "a256", "c", "d", "e"]
ROUNDS = {"a64": 15, "a256": 6, "b": 10, "c": 60, "d": 100, "e": 100}


@pytest.mark.parametrize("workload", WORKLOADS)
def test_collate_main_process(benchmark: Any, interleaved_baseline: Any, workload: str) -> None:
    batch = samples(workload)
    baseline, candidate = collate_fns(workload)
    assert_equal(candidate(batch), baseline(batch))
    benchmark.group = f"collate {workload}"
    benchmark.extra_info.update(workload=workload, candidate="fastcollate (main process)", baseline=baseline.__name__)
    setup = interleaved_baseline(benchmark, lambda: baseline(batch))
    benchmark.pedantic(lambda: candidate(batch), setup=setup, rounds=ROUNDS[workload], warmup_rounds=2)


class _Batches(Dataset[list[Any]]):
    """Each item is a whole prepared batch: the worker's time is collation plus handing the batch over."""

    def __init__(self, batch: list[Any], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> list[Any]:
        return self.batch


class _Timed:
    """A collate_fn that returns ``(batch, seconds)``: how long the wrapped one took, timed inside the worker."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, batch: list[Any]) -> tuple[Any, float]:
        start = time.perf_counter()
        out = self.fn(batch)
        return out, time.perf_counter() - start


WORKER_CASES = [(w, None) for w in WORKLOADS] + [(w, 1 << 20) for w in ("c", "d", "e")]


@pytest.mark.parametrize(("workload", "packing"), WORKER_CASES)
def test_collate_in_a_dataloader_worker(
    benchmark: Any, interleaved_baseline: Any, report: Any, workload: str, packing: int | None
) -> None:
    """The whole loader (collate in the worker, hand-over to the main process), and the collate alone in the worker.

    The whole loader is the figure that counts: the collate alone leaves out the shared-memory copies that the
    DataLoader makes afterwards of outputs not already shared (all of a pad_sequence collate_fn's, default_collate's
    scalar tensors), which fastcollate makes inside the collate. ``packing``: ``fastcollate.set_worker_packing``
    (None: the default, 64 KiB, which leaves (c) and (e)'s 128 KiB feature batches in segments of their own).
    """
    import fastcollate

    batch = samples(workload)
    baseline, candidate = collate_fns(workload)
    n = scaled(8 if workload in ("a256", "b") else 16, 2)

    def loader(fn: Any) -> DataLoader[Any]:
        # batch_size=None: the dataset returns a list of samples, the collate_fn batches it inside the worker
        return DataLoader(
            _Batches(batch, n), batch_size=None, num_workers=1, collate_fn=_Timed(fn), persistent_workers=True
        )

    base_loader, cand_loader = loader(baseline), loader(candidate)
    default_packing = fastcollate.get_worker_packing()
    fastcollate.set_worker_packing(packing if packing is not None else default_packing)
    try:  # the persistent worker is forked here and keeps the setting
        assert_equal(next(iter(cand_loader))[0], next(iter(base_loader))[0])
    finally:
        fastcollate.set_worker_packing(default_packing)
    label = "fastcollate (in a worker)" if packing is None else f"fastcollate (worker, pack {packing >> 10} KiB)"
    benchmark.group = f"collate {workload} (worker)"
    benchmark.extra_info.update(workload=workload, candidate=label, baseline=f"{baseline.__name__} (worker)", steps=n)
    in_worker: dict[str, list[float]] = {"base": [], "cand": []}
    setup = interleaved_baseline(benchmark, lambda: in_worker["base"].extend(t for _, t in base_loader))
    benchmark.pedantic(
        lambda: in_worker["cand"].extend(t for _, t in cand_loader), setup=setup, rounds=5, warmup_rounds=1
    )
    base, cand = min(in_worker["base"]), min(in_worker["cand"])
    report(
        f"{workload:>4}  {label}: the collate alone, timed inside the worker: min {cand / base:.3f}x "
        f"({cand * 1e3:.3f} ms vs {baseline.__name__} {base * 1e3:.3f} ms)"
    )


def test_collate_images_against_default_collate_with_thp(report: Any) -> None:
    """(a) against default_collate with THP_MEM_ALLOC_ENABLE=1 (read by torch at start, hence the child process)."""
    script = pathlib.Path(__file__).with_name("collate_thp.py")
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
    cmd = [sys.executable, str(script)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for workload, row in result.items():
        report(
            f"{workload:>4}  fastcollate vs default_collate with THP_MEM_ALLOC_ENABLE=1: "
            f"min {row['ratio_min']:.3f}x ({row['candidate_min'] * 1e3:.2f} ms vs {row['baseline_min'] * 1e3:.2f} ms)"
        )
    assert torch.__version__  # the child checked the outputs equal; a failure there raised CalledProcessError
