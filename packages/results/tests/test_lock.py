"""ExperimentLock between real processes: a second writer is refused with the owner named; a killed owner's lock is
gone at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aitoolbox.experiment import ExperimentLock, ExperimentLockedError

HOLDER = """
import sys, time
from aitoolbox.experiment import ExperimentLock
lock = ExperimentLock(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()  # hold until told (or killed)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_process_is_refused_until_the_owner_is_killed(tmp_path: Path) -> None:
    with _holder(tmp_path) as proc:
        try:
            with pytest.raises(ExperimentLockedError, match=rf"another process \(pid {proc.pid} on host .*since"):
                ExperimentLock(tmp_path)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    lock = ExperimentLock(tmp_path)  # the kernel released the killed owner's lock: nothing stale to clean
    assert lock.held and f'"pid": {os.getpid()}' in (tmp_path / ".lock").read_text()
    lock.release()


def test_released_lock_and_one_process_sharing_it(tmp_path: Path) -> None:
    first, second = ExperimentLock(tmp_path), ExperimentLock(tmp_path)
    first.release()
    proc = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path)], input="\n", capture_output=True, text=True)
    assert proc.returncode != 0 and "ExperimentLockedError" in proc.stderr  # the second holder still has it
    second.release()
    second.release()  # idempotent
    proc = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path)], input="\n", capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "held\n"
    del first, second
