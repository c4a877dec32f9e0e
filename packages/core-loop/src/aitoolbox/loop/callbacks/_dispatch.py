"""Builds, once per ``fit``, the list of callbacks that really override each hook."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.callbacks.schedule import Every
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.state import LoopState

logger = logging.getLogger(__name__)

HOOKS: dict[str, int] = {
    # hook name -> number of positional arguments after self
    "on_train_loop_registration": 0,
    "on_train_begin": 0,
    "on_train_end": 0,
    "on_epoch_begin": 0,
    "on_epoch_end": 0,
    "on_batch_begin": 0,
    "on_batch_end": 0,
    "on_after_gradient_update": 1,
    "on_after_optimizer_step": 0,
    "on_multiprocess_start": 0,
    "on_after_batch_prediction": 4,
}


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def _check_signature(cb: Callback, hook: str, nargs: int) -> None:
    signature = inspect.signature(getattr(cb, hook)).replace(return_annotation=inspect.Signature.empty)
    try:
        signature.bind(*([None] * nargs))
    except TypeError as err:
        expected = {0: "self", 1: "self, optimizer_idx"}.get(
            nargs, "self, y_pred_batch, y_test_batch, metadata_batch, dataset_info"
        )
        raise LoopConfigError(
            f"{type(cb).__name__}.{hook}{signature} cannot be called as {hook}({expected}); "
            f"change its parameters to ({expected})"
        ) from err


def validate_callbacks(callbacks: Iterable[object] | None) -> list[Callback]:
    """Check that each object is a :class:`Callback` whose overridden hooks have the right parameters."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    if not isinstance(callbacks, Iterable):
        raise LoopConfigError(f"callbacks must be a list of Callback objects, got {type(callbacks).__name__}")
    checked: list[Callback] = []
    for i, cb in enumerate(callbacks):
        if any(cb is seen for seen in checked):
            raise LoopConfigError(
                f"callbacks[{i}] ({type(cb).__name__}) is the same instance as an earlier callback; its hooks would "
                "run twice per event (EarlyStopping would count each epoch twice): pass each callback once"
            )
        if not isinstance(cb, Callback):
            hint = " (pass an instance: MyCallback(), not the class MyCallback)" if isinstance(cb, type) else ""
            raise LoopConfigError(
                f"callbacks[{i}] is {cb!r}, which is not a Callback; subclass "
                f"aitoolbox.torchtrain.callbacks.Callback{hint}"
            )
        for hook, nargs in HOOKS.items():
            if _overrides(cb, hook):
                _check_signature(cb, hook, nargs)
        _check_schedule(cb, i)
        checked.append(cb)
    return checked


def _check_schedule(cb: Callback, i: int) -> None:
    schedule = cb.hook_schedule
    if schedule is None:
        return
    if not isinstance(schedule, Every):
        raise LoopConfigError(
            f"callbacks[{i}] ({type(cb).__name__}).hook_schedule must be None or an Every(...), got {schedule!r}"
        )
    unknown = [h for h in schedule.filtered_hooks if h not in HOOKS]
    if unknown:
        raise LoopConfigError(f"callbacks[{i}] ({type(cb).__name__}): {schedule!r} names unknown hooks {unknown}")


def _scheduled(method: Callable[..., None], schedule: Every, state: LoopState) -> Callable[..., None]:
    """``method``, called only when ``schedule`` is due (by the state's steps or complete epochs)."""
    due = schedule.due
    if schedule.unit == "step":

        def by_step(*args: Any) -> None:
            if due(state.iteration):
                method(*args)

        return by_step

    def by_epoch(*args: Any) -> None:
        if due(state.epochs_done):
            method(*args)

    return by_epoch


class CallbackHandler:
    """The registered callbacks, sorted by ``execution_order``, and per hook the ones that override it.

    ``local_rank``: in a distributed run, this process's local rank; a callback with another ``device_idx_execution``
    is left out here. ``None`` (one process): every callback runs. ``calls``: per hook, what the loop calls (the
    bound hooks; a callback's :class:`~aitoolbox.loop.callbacks.Every` ``hook_schedule`` filters its hooks by the
    counters of ``state``).
    """

    def __init__(
        self, callbacks: list[Callback], local_rank: int | None = None, state: LoopState | None = None
    ) -> None:
        def runs_here(cb: Callback) -> bool:
            where = getattr(cb, "device_idx_execution", None)
            return local_rank is None or where is None or where == local_rank

        self.callbacks = sorted((cb for cb in callbacks if runs_here(cb)), key=lambda c: c.execution_order)
        self.by_hook: dict[str, list[Callback]] = {
            hook: [cb for cb in self.callbacks if _overrides(cb, hook)] for hook in HOOKS
        }
        state = state or LoopState()
        self.calls: dict[str, list[Callable[..., None]]] = {}
        for hook, cbs in self.by_hook.items():
            calls = []
            for cb in cbs:
                method, schedule = getattr(cb, hook), cb.hook_schedule
                if schedule is not None and hook in schedule.filtered_hooks:
                    method = _scheduled(method, schedule, state)
                calls.append(method)
            self.calls[hook] = calls
            if cbs:
                logger.debug("hook %s -> %s", hook, [cb.callback_name for cb in cbs])

    def call(self, hook: str) -> None:
        for call in self.calls[hook]:
            call()
