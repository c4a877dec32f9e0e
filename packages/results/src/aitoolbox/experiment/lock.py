"""One writer per experiment folder: a lock the operating system releases when its process ends, whatever ended it.

The lock is an advisory ``flock`` on ``<experiment>/.lock``, which also names its owner (pid, host, command, start
time) for the error a second writer gets; the file is removed when the lock is released. The kernel drops the lock
when the owner exits, is killed (SIGKILL included) or its machine goes away (NFS), so a lock is never left stale (a
file left by a killed owner is taken over at once). Within one process the lock is shared: a second loop of
the same process may continue the experiment (e.g. a notebook resuming it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from aitoolbox.experiment.errors import ExperimentLockedError

__all__ = ["LOCK_FILE", "ExperimentLock"]

logger = logging.getLogger(__name__)

#: the lock file of an experiment folder (hidden: never uploaded nor listed in the summary)
LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (descriptor, holders in this process)
_guard = threading.Lock()


def _owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",  # no arguments: secrets
        "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


class ExperimentLock:
    """Hold the write lock of an experiment folder while this object (or another of this process on the same folder)
    lives; :meth:`release` gives it back early.

    Args:
        folder: the experiment folder (it must exist).

    Raises:
        ExperimentLockedError: another process holds the lock; the message names it (pid, host, command, since).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> lock = ExperimentLock(folder)
        >>> ExperimentLock(folder).held  # the same process may take it again
        True
        >>> lock.release()
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).resolve()
        self.held = False
        with _guard:
            if self.folder in _held:
                fd, count = _held[self.folder]
                _held[self.folder] = (fd, count + 1)
            else:
                _held[self.folder] = (self._acquire(), 1)
        self.held = True
        self._finalizer = weakref.finalize(self, _release, self.folder)

    def _acquire(self) -> int:
        path = self.folder / LOCK_FILE
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking (logged)
            logger.warning("experiment folders cannot be locked on this platform: one writer at a time, please")
            return -1
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise ExperimentLockedError(
                    f"the experiment folder {self.folder} is being written by another process ({owner}); two "
                    "writers would overwrite each other's checkpoints and results. Wait for it to end or stop it (its "
                    "lock is released as soon as it exits, even when killed), or train into another experiment"
                ) from None
            except OSError as err:  # a file system without locks (some network mounts)
                logger.warning("cannot lock %s (%s): make sure no other process writes this experiment", path, err)
                return fd
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous owner unlinked as we opened it: ours
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner()).encode() + b"\n", 0)
        return fd

    def release(self) -> None:
        """Give the lock back (when no other holder of this process has it); idempotent."""
        if self.held:
            self.held = False
            self._finalizer()


def _read_owner(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0))
        return f"pid {data['pid']} on host {data['host']}, `{data['command']}`, since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its owner is not recorded"


def _release(folder: Path) -> None:
    with _guard:
        if folder not in _held:
            return
        fd, count = _held[folder]
        if count > 1:
            _held[folder] = (fd, count - 1)
            return
        del _held[folder]
    if fd < 0:
        return
    try:
        os.unlink(folder / LOCK_FILE)  # while still locked: a process that opened it re-checks and retries
    except OSError:
        pass  # the folder is gone or read-only: the lock still ends with the descriptor
    os.close(fd)  # closing the descriptor drops the flock
