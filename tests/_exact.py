"""The exact-resume harness shared by the crash and preemption tests: the child process (``_resume_child.py``), its
uninterrupted run (the ``straight`` fixture, registered in ``conftest.py``) and the comparison."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

CHILD = Path(__file__).with_name("_resume_child.py")


def run_child(
    root: Path, out: Path, mode: str, kill_at: str = "-", workers: int = 0, config: str = "global"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), str(root), str(out), mode, kill_at, str(workers), config],
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_result(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False)


_straight_runs: dict[tuple[str, int], dict[str, Any]] = {}


@pytest.fixture(scope="session")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uninterrupted run of a (config, workers) pair, computed once per session."""

    def get(config: str, workers: int) -> dict[str, Any]:
        if (config, workers) not in _straight_runs:
            root = tmp_path_factory.mktemp(f"straight-{config}-{workers}")
            proc = run_child(root, root / "out.pt", "straight", "-", workers, config)
            assert proc.returncode == 0, proc.stderr
            _straight_runs[config, workers] = load_result(root / "out.pt")
        return _straight_runs[config, workers]

    return get


def assert_same_run(resumed: dict[str, Any], straight: dict[str, Any], resumes_at: int) -> None:
    for k, v in straight["params"].items():
        assert torch.equal(resumed["params"][k], v), k
    for (ka, a), (kb, b) in zip(
        resumed["optimizer"]["state"].items(), straight["optimizer"]["state"].items(), strict=True
    ):
        assert ka == kb and all(torch.equal(a[n], b[n]) for n in a)
    assert resumed["history"] == straight["history"]  # bit-identical losses, incl. the interrupted epoch
    assert resumed["lr"] == straight["lr"]  # the LR scheduler's state came back
    assert resumed["early_stopping"]["best"] == straight["early_stopping"]["best"]
    # the resumed process saw exactly the batches the straight run saw from the resume point on
    assert resumed["seen"][0][0] == resumes_at + 1
    assert resumed["seen"] == straight["seen"][resumes_at:]
