"""Applies to every test directory of the monorepo (each package's tests/ and the root tests/)."""

from __future__ import annotations

import pytest

# AIToolbox 1.8 module paths that only raise an ImportError naming their replacement (tests/compat/test_paths.py
# imports each): not collected as doctest modules
collect_ignore = [
    "packages/cloud/src/aitoolbox/cloud/AWS",
    "packages/cloud/src/aitoolbox/cloud/GoogleCloud",
    "packages/results/src/aitoolbox/experiment/local_experiment_saver.py",
    "packages/results/src/aitoolbox/experiment/training_history.py",
    "src/aitoolbox/nlp",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where CUDA is missing (torch is imported only if such tests were collected)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
