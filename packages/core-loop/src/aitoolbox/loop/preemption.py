"""Preemption: a signal (SIGTERM, SIGUSR1, SIGINT...) stops training at the next optimizer-step boundary, on every
rank at the same one, and ``fit`` raises :class:`Preempted` (a ``SystemExit`` with a documented exit code) once the
loop's extensions have committed and uploaded what they must (the checkpointing variants: a checkpoint through the
normal crash-safe path, then the uploads, newest first, within the grace period).

The signal handler only records (a flag and the time): it never saves, logs or raises. The loop reads the flag at
step boundaries (one attribute read per step). In a distributed run the first rank that sees a signal writes the
boundary it reached into the c10d store; every rank reads the store at its step boundaries (~30 us on loopback, no
device sync) and all stop at the first boundary after the one written, which every rank has reached only after the
writer wrote it (each step's gradient all-reduce needs every rank), so all read the same answer there.

Example:
    .. code-block:: python

        tl = TrainLoopCheckpoint(..., preemption=Preemption(grace_s=120, exit_code=143))
        tl.fit(num_epochs=10, resume_from="latest")   # a SIGTERM: checkpoint, uploads, exit code 143; rerun: continue
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitoolbox.loop.errors import LoopConfigError, check_int

__all__ = ["DEFAULT_SIGNALS", "IgnoreSignals", "Preempted", "Preemption", "PreemptionWatch", "launcher_grace_s"]

logger = logging.getLogger(__name__)

#: the signals that preempt by default: what Kubernetes, SLURM (``--signal``), spot notices and Ctrl-C send
DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def _signum(value: object) -> int:
    if isinstance(value, str):
        number = getattr(signal, value if value.startswith("SIG") else f"SIG{value}", None)
        if isinstance(number, int):
            value = number
    if not isinstance(value, int) or isinstance(value, bool):
        raise LoopConfigError(f"preemption signals are names like 'SIGTERM' or signal numbers, got {value!r}")
    if value in _UNCATCHABLE:
        raise LoopConfigError(f"{signal.Signals(value).name} cannot be caught; remove it from the preemption signals")
    try:
        return int(signal.Signals(value))
    except ValueError:
        raise LoopConfigError(f"{value} is not a signal on this platform") from None


def launcher_grace_s() -> float | None:
    """How long the launcher waits between SIGTERM and SIGKILL, when this process was started by torchrun (its
    ``--shutdown-timeout``, else ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, else torch's default 30 s); ``None`` otherwise."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    try:  # the agent's command line: ``--shutdown-timeout N`` / ``--shutdown_timeout=N``
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
        found = re.search(r"--shutdown[-_]timeout[= ](\d+)", " ".join(argv))
        if found:
            return float(found.group(1))
    except OSError:
        pass
    return float(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30"))


class Preemption:
    """What a preemption signal does to a :class:`~aitoolbox.loop.TrainLoop` (``TrainLoop(..., preemption=...)``).

    Args:
        grace_s: the time between the signal and the SIGKILL that follows it (2 min on EC2 spot, 30 s on GCP and
            Kubernetes by default). Under torchrun the budget is the smaller of this and its shutdown timeout; a
            warning at the start of ``fit`` says when this is longer.
        margin_s: kept free at the end of the grace period (interpreter exit, launcher bookkeeping).
        exit_code: the ``SystemExit`` code of :class:`Preempted` (143 = 128 + SIGTERM, what a Kubernetes
            ``podFailurePolicy`` or a SLURM requeue wrapper matches on).
        signals: the signals that preempt (names or numbers); every other handler installed for them before is
            still called. DataLoader workers ignore them (the main process stops the loader).
        check_every: distributed runs read the stop decision from the c10d store every ``check_every`` optimizer
            steps (more: less overhead per step, a later stop).
    """

    def __init__(
        self,
        *,
        grace_s: float = 30.0,
        margin_s: float = 5.0,
        exit_code: int = 143,
        signals: Iterable[str | int] = DEFAULT_SIGNALS,
        check_every: int = 1,
    ) -> None:
        for name, value in (("grace_s", grace_s), ("margin_s", margin_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise LoopConfigError(f"Preemption({name}=...) must be a number of seconds >= 0, got {value!r}")
        if margin_s >= grace_s:
            raise LoopConfigError(f"Preemption margin_s ({margin_s}) must be smaller than grace_s ({grace_s})")
        self.grace_s, self.margin_s = float(grace_s), float(margin_s)
        self.exit_code = check_int("Preemption exit_code", exit_code, 0, expected="an int from 0 to 255")
        if exit_code > 255:
            raise LoopConfigError(f"Preemption exit_code must be from 0 to 255, got {exit_code}")
        self.signals = tuple(dict.fromkeys(_signum(s) for s in signals))
        if not self.signals:
            raise LoopConfigError("Preemption needs at least one signal (or pass preemption=False)")
        self.check_every = check_int("Preemption check_every", check_every, 1, expected="a positive int")

    def budget_s(self) -> float:
        """Seconds from the signal to the end of the work after it: ``min(grace, launcher's) - margin``."""
        launcher = launcher_grace_s()
        grace = self.grace_s if launcher is None else min(self.grace_s, launcher)
        return max(grace - self.margin_s, 0.0)

    def __repr__(self) -> str:
        names = ", ".join(signal.Signals(s).name for s in self.signals)
        return f"Preemption(grace_s={self.grace_s}, margin_s={self.margin_s}, exit_code={self.exit_code}, [{names}])"

    @classmethod
    def resolve(cls, value: object, default_on: bool) -> Preemption | None:
        """The ``preemption`` option: a :class:`Preemption`, ``True`` (defaults), ``False`` (off) or ``None`` (the
        loop class's default: on in the checkpointing variants)."""
        if value is None:
            value = default_on
        if value is True:
            return cls()
        if value is False:
            return None
        if isinstance(value, Preemption):
            return value
        raise LoopConfigError(f"preemption must be a Preemption, True, False or None, got {value!r}")


class Preempted(SystemExit):
    """Raised by ``fit`` after a preemption signal, once training stopped at an optimizer-step boundary and the
    loop's extensions committed and uploaded what they could. A ``SystemExit``: uncaught, the process exits with
    :attr:`code` (143 by default) without a traceback; ``except Preempted`` catches it.

    Attributes:
        code: the exit code (:attr:`Preemption.exit_code`).
        signal: the signal's name (``'SIGTERM'``); ``'SIGTERM on another rank'`` on the ranks that did not get one.
        epoch, iteration: where training stopped (``iteration`` batches done).
        checkpoint: the checkpoint committed for the stop (checkpointing variants), else ``None``.
        seconds_to_commit: from the signal to the committed checkpoint.
        durable: whether everything to upload reached the bucket (``None`` without one).
        signal_time: ``time.monotonic()`` of the signal.
    """

    def __init__(
        self, code: int, signal: str, epoch: int, iteration: int, deadline: Callable[[], float], signal_time: float
    ) -> None:
        super().__init__(code)
        self.signal, self.epoch, self.iteration = signal, epoch, iteration
        self.deadline = deadline  # time.monotonic() at which the budget ends (a second signal brings it closer)
        self.signal_time = signal_time
        self.checkpoint: Path | None = None
        self.seconds_to_commit: float | None = None
        self.durable: bool | None = None

    def remaining_s(self) -> float:
        """Seconds left of the budget (0 once it is spent)."""
        return max(self.deadline() - time.monotonic(), 0.0)

    def __str__(self) -> str:
        where = f"epoch {self.epoch}, iteration {self.iteration}"
        saved = f"; checkpoint {self.checkpoint}" if self.checkpoint is not None else ""
        return f"training preempted by {self.signal} at {where}{saved}; exit code {self.code}"


@dataclass(frozen=True)
class IgnoreSignals:
    """A DataLoader ``worker_init_fn`` that ignores the preemption signals, then calls the user's (picklable).

    SIGTERM is ignored unless the worker's parent sends it: the DataLoader's shutdown and multiprocessing's exit
    handler end workers with ``terminate()`` (SIGTERM), and a worker that ignored it would hang its parent's exit."""

    signals: tuple[int, ...]
    inner: Callable[[int], Any] | None = None

    def __call__(self, worker_id: int) -> None:
        for signum in self.signals:
            if signum == signal.SIGTERM and hasattr(signal, "sigwaitinfo"):
                _sigterm_from_parent_only()
            else:
                signal.signal(signum, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)


def _sigterm_from_parent_only() -> None:
    """Block SIGTERM in this (worker) process and wait for it on a thread: from the parent it ends the worker as
    SIGTERM would; from anyone else (a shell, SLURM, a process group) it is ignored."""
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="aitoolbox-worker-sigterm", daemon=True).start()


class PreemptionWatch:
    """The signal handlers of one ``fit``: record the first signal and its time; a later one halves what is left of
    the budget, except that a second SIGINT (Ctrl-C) raises ``KeyboardInterrupt`` at once, as Python does (a person
    facing a hung step; the message says so). :meth:`install` at the start of training, :meth:`restore` at its end."""

    def __init__(self, settings: Preemption) -> None:
        self.settings = settings
        #: the launcher's grace (torchrun's shutdown timeout) and the budget, read once here, not in the handler
        self.launcher_s = launcher_grace_s()
        self.budget_s = settings.budget_s()
        self.requested = False
        self.signum: int | None = None
        self.signal_time = 0.0  # time.monotonic() of the first signal
        self.signal_wall = 0.0  # time.time() of the first signal
        self.deadline = 0.0
        self.count = 0
        self.interrupts = 0  # SIGINTs: the second one interrupts at once, as Python's own handler would
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def install(self) -> bool:
        """Install the handlers (main thread only; elsewhere preemption is off, with a warning)."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("fit runs outside the main thread: preemption signals are not handled")
            return False
        for signum in self.settings.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process stops the loader
        now = time.monotonic()
        self.count += 1
        if signum == signal.SIGINT:  # Ctrl-C: a person, who may be facing a hung step
            self.interrupts += 1
            if self.interrupts > 1:
                os.write(2, b"\nCtrl-C again: interrupting now (KeyboardInterrupt); `latest` is the last committed\n")
                raise KeyboardInterrupt
            os.write(2, b"\nCtrl-C: stopping at the next optimizer step and saving; Ctrl-C again to interrupt now\n")
        if not self.requested:
            self.signum, self.signal_time, self.signal_wall = signum, now, time.time()
            self.deadline = now + self.budget_s
            self.requested = True
        else:  # hurry: half of what is left (a commit in progress still completes)
            self.deadline = now + max(self.deadline - now, 0.0) / 2
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)
