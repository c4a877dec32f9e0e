"""The public extension seam of :class:`~aitoolbox.loop.TrainLoop`: what a library adds around ``fit`` (experiment
folders, checkpoints, uploads, end-of-training evaluation) without subclassing the engine's internals.

An extension is given to the constructor (``TrainLoop(..., extensions=[...])``). ``fit`` calls, in this order::

    attach(loop)                   # at construction: check options early (before any training)
    check_fit(loop, run)           # fit called: check this extension's fit options (before workers are launched)
    before_fit(loop, run)          # in the training process, runtime set up: may change run (remaining epochs,
                                   # more callbacks) or set run.train = False (nothing left to train)
    on_fit_start(loop)             # callbacks registered, before on_train_begin (restore callback state here)
    ... training ...
    after_fit(loop) | on_error(loop, err)     # in reverse order: the last extension attached finishes first
    on_preempt(loop, preempted)               # instead, after a preemption signal: first attached first (commit,
                                              # then upload), then fit raises ``preempted`` (a SystemExit)

With ``gpu_mode='ddp'`` from a plain process, the hooks from ``check_fit`` on run in each launched worker, and
``export_run``/``import_run`` carry rank 0's results back to the caller's loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar

import torch

from aitoolbox.loop.callbacks.base import Callback, LoopView
from aitoolbox.loop.errors import LoopConfigError

if TYPE_CHECKING:
    from aitoolbox.loop.preemption import Preempted, Preemption
    from aitoolbox.loop.strategy import Strategy

logger = logging.getLogger("aitoolbox.loop.train_loop")  # where "training failed" was always logged

__all__ = ["FitRun", "LoopExtension", "LoopOptions", "after_fit", "fit_failed", "fit_options"]


class LoopOptions(TypedDict, total=False):
    """The keyword options of :class:`~aitoolbox.loop.TrainLoop`, for classes built on it to pass through with
    ``**options: Unpack[LoopOptions]`` (documented on the TrainLoop)."""

    device: str | torch.device | None
    cuda_device_idx: int | None
    gpu_mode: str
    strategy: Strategy | str | None
    use_amp: Any
    end_auto_eval: bool | int
    progress_bar: bool | None
    prefetch: bool
    fast_collate: bool | None
    num_processes: int | None
    ddp_options: dict[str, Any] | None
    preemption: Preemption | bool | None
    collate_batch_pred_fn: Callable[[Any, list[Any]], list[Any]] | None
    pred_transform_fn: Callable[[list[Any]], Any] | None
    lazy_experiment_save: bool
    print_callbacks: bool
    compile: bool | dict[str, Any] | None


@dataclass
class FitRun:
    """One call of ``fit``: what to train, and the extensions' keyword options (defaults filled in).

    Attributes:
        num_epochs, num_iterations: how much more to train (0: not the limit); ``before_fit`` may lower them.
        callbacks: the user's callbacks; extensions may append their own.
        grad_accumulation: batches per optimizer step.
        options: every keyword option of ``fit`` that an extension declared in ``fit_options``.
        train: ``False`` skips training (e.g. a resumed run that is already complete); ``after_fit`` still runs.
    """

    num_epochs: int
    num_iterations: int
    callbacks: list[Callback]
    grad_accumulation: int
    options: dict[str, Any] = field(default_factory=dict)
    train: bool = True


#: the loop an extension is written for: :class:`~aitoolbox.loop.LoopView` (any TrainLoop), or a TrainLoop class
L = TypeVar("L", contravariant=True)


class LoopExtension(Generic[L]):
    """Base class of TrainLoop extensions: every hook is a no-op. ``loop`` is the running loop: an extension for any
    TrainLoop subclasses ``LoopExtension[LoopView]``; one that needs a variant's attributes names it
    (``LoopExtension[TrainLoopCheckpoint]``).

    .. versionchanged:: 0.7
        Generic in the loop it attaches to (was typed ``Any``).

    Attributes:
        fit_options: keyword options this extension adds to ``fit``, with their defaults.
    """

    fit_options: ClassVar[Mapping[str, Any]] = {}

    def attach(self, loop: L) -> None:
        """The loop is constructed: check what can be checked before training."""

    def check_fit(self, loop: L, run: FitRun) -> None:
        """``fit`` was called: check ``run.options`` (before launching workers)."""

    def before_fit(self, loop: L, run: FitRun) -> None:
        """In the training process, before the callbacks are registered."""

    def on_fit_start(self, loop: L) -> None:
        """Callbacks registered, training about to begin."""

    def after_fit(self, loop: L) -> None:
        """Training ended normally (or there was nothing to train)."""

    def on_error(self, loop: L, error: BaseException) -> None:
        """Training failed with ``error`` (raised again after every extension's ``on_error``)."""

    def on_preempt(self, loop: L, preempted: Preempted) -> None:
        """Training stopped for a preemption signal at a step boundary (every rank at the same one): save what
        must survive within ``preempted.remaining_s()`` and record it on ``preempted`` (a
        :class:`~aitoolbox.loop.preemption.Preempted`: ``checkpoint``, ``seconds_to_commit``, ``durable``)."""

    def export_run(self, loop: L) -> Any:
        """What a launched rank 0 hands back for this extension (picklable)."""
        return None

    def import_run(self, loop: L, data: Any) -> None:
        """Adopt what :meth:`export_run` returned in rank 0."""


def fit_options(loop: LoopView, options: Mapping[str, Any]) -> dict[str, Any]:
    """``fit``'s keyword ``options`` with the defaults of ``loop.extensions``; an unknown one is refused."""
    known = {k: v for ext in loop.extensions for k, v in ext.fit_options.items()}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise LoopConfigError(
            f"fit() got unknown option(s) {unknown}; {type(loop).__name__}.fit takes num_epochs, num_iterations, "
            f"callbacks, grad_accumulation{''.join(', ' + k for k in known)}"
        )
    return {**known, **options}


def fit_failed(loop: LoopView, error: BaseException, *, training: bool) -> None:
    """``fit`` raised ``error``: log it (and report it to torchrun) when training had started, then every
    extension's ``on_error``, last attached first. The caller raises ``error`` again."""
    if training:
        logger.error("training failed in epoch %d at iteration %d", loop.epoch, loop.iteration)
        if isinstance(error, Exception):
            loop.runtime.record_failure(error)  # torchrun's summary then names this rank's error
    for ext in reversed(loop.extensions):
        ext.on_error(loop, error)


def after_fit(loop: LoopView) -> None:
    """Every extension's ``after_fit``, last attached first; the first error is raised once all have run (what
    was saved must still go up when an earlier one failed)."""
    errors: list[BaseException] = []
    for ext in reversed(loop.extensions):
        try:
            ext.after_fit(loop)
        except BaseException as err:
            errors.append(err)
    if errors:
        raise errors[0]
