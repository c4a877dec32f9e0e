"""A fixed-seed slice of the randomized fault campaign (``scripts/fault_campaign.py``; run it with ``--runs 50`` for
the whole one): real SIGKILLs and SIGTERMs at random moments, one run mirrored to S3 with its server killed and
restarted; every run resumes to the uninterrupted result, SIGTERM loses no step, ``latest`` always loads, and ranked
retention keeps the two best epoch-end checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_campaign.py"


@pytest.mark.timeout(900)  # ~90 s here; several times that on a busy machine (its subprocess has the same limit)
def test_a_small_fixed_seed_campaign_resumes_every_run_exactly() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "3", "--seed", "7", "--s3-every", "3"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert "resumed exactly:         3/3" in out
    assert "steps lost per SIGTERM:  0 in total" in out
    assert "unloadable latest:       0; bucket latest incomplete: 0" in out
    assert "best 2 kept, verified:   3/3" in out  # ranked retention with iteration checkpoints
