"""Builds, once per ``fit``, the list of callbacks that really override each hook."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.errors import LoopConfigError

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
        checked.append(cb)
    return checked


class CallbackHandler:
    """The registered callbacks, sorted by ``execution_order``, and per hook the ones that override it.

    ``local_rank``: in a distributed run, this process's local rank; a callback with another ``device_idx_execution``
    is left out here. ``None`` (one process): every callback runs.
    """

    def __init__(self, callbacks: list[Callback], local_rank: int | None = None) -> None:
        def runs_here(cb: Callback) -> bool:
            where = getattr(cb, "device_idx_execution", None)
            return local_rank is None or where is None or where == local_rank

        self.callbacks = sorted((cb for cb in callbacks if runs_here(cb)), key=lambda c: c.execution_order)
        self.by_hook: dict[str, list[Callback]] = {
            hook: [cb for cb in self.callbacks if _overrides(cb, hook)] for hook in HOOKS
        }
        for hook, cbs in self.by_hook.items():
            if cbs:
                logger.debug("hook %s -> %s", hook, [cb.callback_name for cb in cbs])

    def call(self, hook: str) -> None:
        for cb in self.by_hook[hook]:
            getattr(cb, hook)()
