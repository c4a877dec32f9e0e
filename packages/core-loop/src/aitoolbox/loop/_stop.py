"""Where a preempted fit stops: the signal handlers of the fit (:func:`preemption_guard`), the step boundary every
rank stops at (:class:`StopPoint`), and what ``fit`` does with the :class:`~aitoolbox.loop.preemption.Preempted`
it raises (:func:`on_preempted`)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

from aitoolbox.loop.preemption import Preempted, PreemptionWatch
from aitoolbox.loop.runtime import Runtime
from aitoolbox.loop.state import LoopState

__all__ = ["StopPoint", "on_preempted", "preempted_after_training", "preemption_guard"]

logger = logging.getLogger("aitoolbox.loop.preemption")

_fits = itertools.count()  # every rank calls fit equally often: the n-th fit's key is the same on every rank


@contextlib.contextmanager
def preemption_guard(loop: Any) -> Iterator[PreemptionWatch | None]:
    """The fit's signal handlers, from before training until the work after a preemption is done."""
    settings = loop.preemption
    watch = PreemptionWatch(settings) if settings is not None else None
    if watch is not None and not watch.install():
        watch = None
    loop.preemption_watch = watch
    if watch is not None and loop.is_main_process and watch.launcher_s is not None:
        if watch.launcher_s < watch.settings.grace_s:
            logger.warning(
                "preemption: grace_s=%.0f but the launcher kills %.0f s after its SIGTERM (torchrun "
                "--shutdown-timeout); the work after a signal gets %.0f s. Raise --shutdown-timeout to match",
                watch.settings.grace_s,
                watch.launcher_s,
                watch.budget_s,
            )
    try:
        yield watch
    finally:
        loop.preemption_watch = None
        if watch is not None:
            watch.restore()


class StopPoint:
    """The step boundary a preempted run stops at; called after every batch (``boundary``: an optimizer step was
    just taken). One process stops at the first boundary after its signal. Ranks: the first to see a signal writes
    the boundary it reached (``b``) to the c10d store; all stop at the first boundary read after ``b``."""

    def __init__(self, watch: PreemptionWatch, runtime: Runtime, state: LoopState, store: Any = None) -> None:
        self.watch, self.state = watch, state
        self.runtime = runtime
        self.store = store
        self.key = f"aitoolbox/preempt/{next(_fits)}"
        self.check_every = watch.settings.check_every
        self.last_boundary = state.iteration
        self.boundaries = 0
        self.published = False
        self.decided: tuple[int, str] | None = None  # (boundary written, signal name)

    @classmethod
    def build(cls, watch: PreemptionWatch | None, runtime: Runtime, state: LoopState) -> StopPoint | None:
        if watch is None:
            return None
        if not runtime.distributed:
            return cls(watch, runtime, state)
        from torch.distributed import distributed_c10d

        return cls(watch, runtime, state, distributed_c10d._get_default_store())

    def __call__(self, step: int, boundary: bool) -> bool:
        if self.store is None:
            return boundary and self.watch.requested
        if boundary:
            self.last_boundary = step
            self.boundaries += 1
        self.publish()
        if not boundary or self.boundaries % self.check_every:
            return False
        if self.decided is None:
            if not self.store.check([self.key]):
                return False
            at, name = self.store.get(self.key).decode().split(":", 1)
            self.decided = (int(at), name)
        return self.decided[0] < step

    def publish(self) -> None:
        """Write the last boundary passed into the store, once, if a signal came (also called at epoch ends: a signal
        during the epoch's evaluation stops every rank at the next epoch's first step)."""
        if self.store is None or self.published or not self.watch.requested:
            return
        self.published = True
        if self.store.add(f"{self.key}/writers", 1) == 1:  # the first rank's boundary is the one
            self.store.set(self.key, f"{self.last_boundary}:{self.watch.signal_name}")

    def preempted(self) -> Preempted:
        """The exception ``fit`` raises for this stop (logged once, by the main process)."""
        watch, state = self.watch, self.state
        local = watch.requested
        name = watch.signal_name if local else f"{self.decided[1] if self.decided else 'a signal'} on another rank"
        now = time.monotonic()
        end = now + watch.budget_s
        deadline = (lambda: watch.deadline) if local else (lambda: end)
        err = Preempted(
            watch.settings.exit_code, name, state.epoch, state.iteration, deadline, watch.signal_time if local else now
        )
        if self.runtime.is_main:
            logger.warning(
                "preempted by %s: training stopped at epoch %d, iteration %d, %.2f s after the signal; %.1f s of the "
                "budget left for saving",
                name,
                state.epoch,
                state.iteration,
                now - err.signal_time,
                err.remaining_s(),
            )
        return err


def preempted_after_training(loop: Any, stop_point: StopPoint | None) -> Preempted | None:
    """A signal that came after the last step boundary (the last epoch's end work): the run still counts as
    preempted (every rank agrees), so that what follows training is done by the rerun, not cut by SIGKILL."""
    if stop_point is None or not loop.runtime.any(stop_point.watch.requested):
        return None
    return stop_point.preempted()


def on_preempted(loop: Any, err: Preempted) -> None:
    """Every extension's ``on_preempt`` (first attached first: commit before upload), then the summary."""
    for ext in loop.extensions:
        ext.on_preempt(loop, err)
    if loop.is_main_process:
        durable = {None: "", True: "; uploads complete", False: "; uploads NOT complete (see above)"}[err.durable]
        logger.warning("%s (%.1f s after the signal%s)", err, time.monotonic() - err.signal_time, durable)
