"""Fixtures shared by the cross-package tests: the digits CNN and loaders from ``examples/``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from aitoolbox.cloud.pytest_fixtures import aws_env, bucket, s3_server

__all__ = ["aws_env", "bucket", "s3_server", "straight"]

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from _exact import straight  # noqa: E402 (after the path it is found on)

EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
