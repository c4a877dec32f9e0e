"""The README's main job runs as a user would run it: a fresh interpreter on the example script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_script_trains_digits_and_reports_accuracy(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_digits.py"), "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    lines = proc.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 15
    assert all("loss" in line and "val_loss" in line and "val_accuracy" in line for line in epochs)
    match = re.search(r"test accuracy (\d\.\d+)", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) >= 0.95  # the README's promise
    folder = re.search(r"experiment folder (\S+)", proc.stdout)
    assert folder and (Path(folder.group(1)) / "summary.md").is_file()
    assert (Path(folder.group(1)) / "code" / "train_digits.py").is_file()  # the training script was copied
