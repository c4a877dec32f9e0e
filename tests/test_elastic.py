"""Resume across a change of world size, with real processes: ``torchrun --nproc_per_node=2`` on CPU (gloo) and
plain one-process runs of the same jobs (``_elastic_worker.py``).

With the stock sampler (``DataLoader(shuffle=True)``, sharded by a DistributedSampler) a mid-epoch resume on another
world size is refused, and a same-size resume in a differently seeded process is bit-exact. With an
``ElasticSampler`` a checkpoint of N processes resumes on M (1 -> 1, 2 -> 2, 2 -> 1, 1 -> 2, and another
``grad_accumulation``): every sample of the interrupted epoch is trained exactly once, the weights match the
uninterrupted one-process run within 1e-6, and the data-order logs are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

WORKER = Path(__file__).with_name("_elastic_worker.py")
N = 256  # the worker's training set
pytestmark = pytest.mark.slow


def _run(out: Path, jobs: str, *args: str, nproc: int = 0) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["OMP_NUM_THREADS"] = "1"
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    proc = subprocess.run(
        [sys.executable, *launcher, str(WORKER), "--out", str(out), "--jobs", jobs, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{jobs} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elastic")
    _run(root, "el-whole")  # the one-process reference (and its snapshot)
    _run(root, "stock-whole,el-whole,el-from-1,ckpt-st-cut", nproc=2)  # 1 -> 2 with the same accumulation
    _run(root, "stock-resume,el-from-2,ckpt-el-cut", "--accumulate", "2", nproc=2)  # 2 -> 2, accumulation 1 -> 2
    jobs = "el-from-1,el-from-2,stock-across,stock-allowed,ckpt-el-resume,ckpt-st-resume"
    _run(root, jobs, "--accumulate", "4")  # 1 -> 1, 2 -> 1
    return root


def _load(out: Path, name: str) -> dict[str, Any]:
    return torch.load(out / f"{name}.pt", weights_only=False)


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float((a["params"][k] - b["params"][k]).abs().max()) for k in a["params"])


def test_load_state_dict_before_fit_in_a_differently_seeded_process_resumes_bit_exact(out: Path) -> None:
    for rank in (0, 1):
        whole, resumed = _load(out, f"stock-whole-w2-r{rank}"), _load(out, f"stock-resume-w2-r{rank}")
        assert resumed["error"] is None
        assert _max_diff(whole, resumed) == 0.0
        assert resumed["loss"][-1] == whole["loss"][-1]


def test_a_mid_epoch_resume_of_the_stock_sampler_on_another_world_size_is_refused(out: Path) -> None:
    refused = _load(out, "stock-across-w1-r0")
    assert refused["error"] is not None
    assert "processes (world size) 2 -> 1" in refused["error"]
    assert "ElasticSampler" in refused["error"] and "allow_resume_changes=True" in refused["error"]
    assert refused["served"] == [], "refused before any sample was fetched"


def test_accepting_the_change_warns_that_samples_repeat_and_are_skipped(out: Path) -> None:
    allowed = _load(out, "stock-allowed-w1-r0")
    assert allowed["error"] is None
    assert any("trained twice" in w and "2 -> 1" in w for w in allowed["warnings"]), allowed["warnings"]


def test_the_elastic_order_trains_like_one_process_on_two(out: Path) -> None:
    ref, two = _load(out, "el-whole-w1-r0"), _load(out, "el-whole-w2-r0")
    assert _max_diff(ref, two) <= 1e-6
    assert two["order"] == ref["order"] and ref["order"]["steps"] == 16  # 2 epochs x 8 global steps


@pytest.mark.parametrize(("saved", "resumed"), [(1, 1), (2, 2), (2, 1), (1, 2)])
def test_an_elastic_checkpoint_resumes_exactly_on_another_world_size(out: Path, saved: int, resumed: int) -> None:
    ref = _load(out, "el-whole-w1-r0")
    runs = [_load(out, f"el-from-{saved}-w{resumed}-r{r}") for r in range(resumed)]
    before = [_load(out, f"el-whole-w{saved}-snap-r{r}")["served"] for r in range(saved)]
    for run in runs:
        assert run["error"] is None
        assert _max_diff(ref, run) <= 1e-6
        assert run["order"] == ref["order"]  # the same samples in the same steps, step by step
    # the interrupted epoch (1): what the saved run served before the snapshot plus what the resumed one served
    served = [i for part in before for e, i in part if e == 1] + [i for run in runs for e, i in run["served"] if e == 1]
    counts = Counter(served)
    assert sorted(counts) == list(range(N)), "every sample of the epoch was trained"
    assert set(counts.values()) == {1}, "none twice"


def test_the_checkpointing_variant_refuses_a_stock_resume_on_another_world_size(out: Path) -> None:
    refused = _load(out, "ckpt-st-resume-w1-r0")
    assert refused["error"] is not None and "processes (world size) 2 -> 1" in refused["error"]


def test_the_checkpointing_variant_resumes_an_elastic_run_on_another_world_size(out: Path) -> None:
    ref, resumed = _load(out, "el-whole-w1-r0"), _load(out, "ckpt-el-resume-w1-r0")
    assert resumed["error"] is None
    assert _max_diff(ref, resumed) <= 1e-6
    assert resumed["order"] == ref["order"]
    folder = Path(resumed["folder"])
    cut = [json.loads(m.read_text()) for m in sorted(folder.glob("checkpoint_model/*/manifest.json"))]
    assert {"steps": 11, "sha256": _chains(11)[-1]} in [m["meta"].get("data_order") for m in cut]
    log = json.loads((folder / "data_order.json").read_text())
    # marks every 2 steps: 2-10 written by the 2-process run before its checkpoint, 12-16 by the resumed process
    assert [m["step"] for m in log["marks"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    chains = _chains(16)
    assert all(m["sha256"] == chains[m["step"] - 1] for m in log["marks"])
    assert log["steps"] == 16 and log["sha256"] == ref["order"]["sha256"]


def _chains(steps: int) -> list[str]:
    """The chain after each step of the worker's elastic order, recomputed here from the sampler settings."""
    from aitoolbox.loop.elastic import GENESIS, ElasticSampler, chain_step

    sampler, chain, out = ElasticSampler(N, global_batch_size=32, seed=7), GENESIS, []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for step in range(sampler.steps):
            chain = chain_step(chain, sampler.global_batch(step))
            out.append(chain.hex())
    return out[:steps]
