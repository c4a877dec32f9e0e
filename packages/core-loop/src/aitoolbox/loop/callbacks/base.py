"""The callback base class (subclass it and override only the hooks you need), and :class:`LoopView`: the loop as
callbacks and extensions see it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.history import TrainingHistory, canonical_metric

if TYPE_CHECKING:
    import torch
    from torch import nn

    from aitoolbox.loop.amp import AmpConfig
    from aitoolbox.loop.callbacks.schedule import Every
    from aitoolbox.loop.messages import MessageService
    from aitoolbox.loop.model import TTModel
    from aitoolbox.loop.preemption import Preemption
    from aitoolbox.loop.runtime import Runtime
    from aitoolbox.loop.state import LoopState
    from aitoolbox.loop.strategy import Strategy

__all__ = [
    "AbstractCallback",
    "CallableBool",
    "Callback",
    "LoopView",
    "callback_states",
    "check_metric_will_exist",
    "check_state_keys",
    "load_callback_states",
    "state_key_of",
]


class CallableBool(int):
    """A bool that may also be called: ``tl.is_main_process`` and the original's ``tl.is_main_process()``."""

    def __call__(self) -> bool:
        return bool(self)

    def __repr__(self) -> str:
        return repr(bool(self))


@runtime_checkable
class LoopView(Protocol):
    """What callbacks and extensions may read or call on the running :class:`~aitoolbox.loop.TrainLoop` (its
    variants add their own attributes, e.g. ``experiment_dir``). A TrainLoop is one; so is any object with these.

    Counters (the meaning of each at every hook: :meth:`~aitoolbox.loop.TrainLoop.fit`): ``epoch``, ``iteration``,
    ``total_iteration_idx``, ``batch_in_epoch``, ``epoch_length``, ``epochs_done``, and the run's targets
    ``num_epochs``, ``num_iterations``, ``grad_accumulation``. ``early_stop`` may be set to stop (or call
    :meth:`request_stop`).

    .. versionadded:: 0.7
    """

    # the run's components, as given to the constructor (``tt_model``: the model as a TTModel)
    model: TTModel | nn.Module
    tt_model: TTModel
    optimizer: Any  # as given: an optimizer, a list of them or a MultiOptimizer; ``optimizers`` is the list
    optimizers: list[torch.optim.Optimizer]
    criterion: Callable[..., torch.Tensor] | None
    train_loader: Iterable[Any]
    validation_loader: Iterable[Any] | None
    test_loader: Iterable[Any] | None
    # where and how it trains
    device: torch.device
    amp: AmpConfig
    grad_scaler: torch.amp.GradScaler | None
    runtime: Runtime
    strategy: Strategy
    preemption: Preemption | None
    end_auto_eval: bool | int
    # the run's state and its participants
    state: LoopState
    callbacks: list[Callback]
    early_stop: bool
    experiment_timestamp: str

    @property
    def epoch(self) -> int: ...
    @property
    def iteration(self) -> int: ...
    @property
    def total_iteration_idx(self) -> int: ...
    @property
    def batch_in_epoch(self) -> int: ...
    @property
    def epoch_length(self) -> int | None: ...
    @property
    def epochs_done(self) -> int: ...
    @property
    def num_epochs(self) -> int: ...
    @property
    def num_iterations(self) -> int: ...
    @property
    def grad_accumulation(self) -> int: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def train_history(self) -> TrainingHistory: ...
    @property
    def last_loss(self) -> torch.Tensor | None: ...
    @property
    def batch_loss(self) -> torch.Tensor | None: ...
    @property
    def callbacks_by_hook(self) -> Mapping[str, Sequence[Callback]]: ...
    @property
    def message_service(self) -> MessageService: ...
    @property
    def is_main_process(self) -> CallableBool: ...
    @property
    def extensions(self) -> Sequence[Any]: ...  # LoopExtension objects (the extensions module imports this one)

    def request_stop(self, reason: str | None = None) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any], *, strict: bool = True) -> None: ...
    def evaluate_loss_on_validation_set(self, force_prediction: bool = ..., float_dict_format: bool = ...) -> float: ...
    def predict_on_train_set(
        self, force_prediction: bool = ..., execute_callbacks: bool = ...
    ) -> tuple[Any, Any, dict[str, Any] | None]: ...
    def predict_on_validation_set(
        self, force_prediction: bool = ..., execute_callbacks: bool = ...
    ) -> tuple[Any, Any, dict[str, Any] | None]: ...
    def predict_on_test_set(
        self, force_prediction: bool = ..., execute_callbacks: bool = ...
    ) -> tuple[Any, Any, dict[str, Any] | None]: ...
    def insert_metric_result_into_history(self, metric_name: str, metric_result: Any) -> None: ...
    def get_num_training_steps(self) -> int: ...


class Callback:
    """Base class of TrainLoop callbacks: every hook is a documented no-op.

    The loop calls a hook only on the callbacks that override it, so an unused hook costs nothing. Inside a hook,
    ``self.train_loop_obj`` is the running :class:`~aitoolbox.loop.TrainLoop` (its ``epoch``, ``iteration``,
    ``train_history``, ``model``, ``optimizer`` ...). Call ``self.train_loop_obj.request_stop("why")`` to stop
    training at the end of the current epoch (or, from a batch hook, after this batch); setting ``early_stop = True``
    works too.

    Hook order (see :meth:`aitoolbox.loop.TrainLoop.fit` for the whole loop)::

        on_train_loop_registration()          # once, when fit() registers the callback
        on_train_begin()
        on_multiprocess_start()               # distributed runs: in every process
        for each epoch:
            on_epoch_begin()
            for each batch:
                on_batch_begin()
                forward + backward
                if an optimizer step is due (see grad_accumulation):
                    on_after_gradient_update(optimizer_idx)   # gradients ready, before step: clip here
                    optimizer.step()
                    on_after_optimizer_step()                 # per-step LR schedules
                on_batch_end()
            history gets 'loss' and 'val_loss'
            on_epoch_end()
        on_train_end()

    Args:
        callback_name: a name used in logs and in checkpoints of callback state.
        execution_order: callbacks run in increasing ``execution_order``; ties keep the order they were given in.
        device_idx_execution: in a distributed run, only the process of this local rank (its GPU index) calls the
            callback's hooks; ``None`` (default): every process. A single process calls every callback.

    Example:
        .. code-block:: python

            class PrintLR(Callback):
                def on_epoch_end(self):
                    lr = self.train_loop_obj.optimizer.param_groups[0]["lr"]
                    logging.getLogger(__name__).info("epoch %d lr %g", self.train_loop_obj.epoch, lr)
    """

    #: Whether a batch-level hook of this callback may set ``early_stop``. In distributed runs the loop then agrees
    #: on the flag across ranks after every batch (one small gloo all-reduce), so all ranks stop at the same batch.
    #: Callbacks that never stop mid-epoch set it to False (no per-batch collective).
    stops_mid_epoch: bool = True
    #: When the hooks run: ``None`` (every time), or an :class:`~aitoolbox.loop.callbacks.Every` that the loop
    #: applies to the hooks it names (e.g. ``Every(100, "step")``: ``on_batch_end`` after every 100th batch).
    hook_schedule: Every | None = None
    _train_loop: LoopView | None = None  # set by register_train_loop_object

    def __init__(
        self, callback_name: str | None = None, execution_order: int = 0, device_idx_execution: int | None = None
    ) -> None:
        if device_idx_execution is not None and (
            not isinstance(device_idx_execution, int)
            or isinstance(device_idx_execution, bool)
            or device_idx_execution < 0
        ):
            raise LoopConfigError(
                f"device_idx_execution must be None (every process) or a local rank >= 0, got {device_idx_execution!r}"
            )
        self.callback_name = callback_name or type(self).__name__
        self.execution_order = execution_order
        #: in a distributed run, the local rank (GPU index) whose process runs this callback; ``None``: every rank
        self.device_idx_execution = device_idx_execution

    @property
    def state_key(self) -> str:
        """The key of this callback's :meth:`state_dict` in a checkpoint: the one set (``cb.state_key = "..."``),
        else :meth:`default_state_key`. Two stateful callbacks of one run need different keys (refused before
        training otherwise); a key never depends on the callbacks' order.

        .. versionadded:: 0.6
        """
        return getattr(self, "_state_key", None) or self.default_state_key()

    @state_key.setter
    def state_key(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise LoopConfigError(f"state_key must be a non-empty string, got {key!r}")
        self._state_key = key

    def default_state_key(self) -> str:
        """The key when none is set: ``callback_name``; stateful callbacks add what tells two of them apart (e.g.
        ``EarlyStopping(val_loss)``)."""
        return self.callback_name

    @property
    def train_loop_obj(self) -> LoopView:
        """The running :class:`~aitoolbox.loop.TrainLoop` this callback is registered with.

        Raises:
            LoopConfigError: the callback is not registered (it was not given to ``fit(callbacks=[...])``).

        .. versionchanged:: 0.7
            Typed :class:`LoopView`; raises instead of returning ``None`` before registration.
        """
        loop = self._train_loop
        if loop is None:
            raise LoopConfigError(
                f"callback {self.callback_name!r} is not registered with a TrainLoop: pass it to "
                "fit(callbacks=[...]) (or call register_train_loop_object(tl)) before using train_loop_obj"
            )
        return loop

    @train_loop_obj.setter
    def train_loop_obj(self, loop: LoopView) -> None:
        self._train_loop = loop

    @property
    def registered(self) -> bool:
        """Whether the callback is registered with a TrainLoop (:attr:`train_loop_obj` is set).

        .. versionadded:: 0.7
        """
        return self._train_loop is not None

    def register_train_loop_object(self, train_loop_obj: LoopView) -> Callback:
        """Attach the callback to a TrainLoop and call :meth:`on_train_loop_registration`."""
        self._train_loop = train_loop_obj
        self.on_train_loop_registration()
        return self

    def on_train_loop_registration(self) -> None:
        """Called once when the callback is registered, before training; validate against the loop here."""

    def on_train_begin(self) -> None:
        """Called once at the start of ``fit``."""

    def on_train_end(self) -> None:
        """Called once at the end of ``fit``, also when training stopped early."""

    def on_epoch_begin(self) -> None:
        """Called at the start of every epoch."""

    def on_epoch_end(self) -> None:
        """Called at the end of every epoch, after the history holds the epoch's ``loss`` and ``val_loss``."""

    def on_batch_begin(self) -> None:
        """Called before every training batch."""

    def on_batch_end(self) -> None:
        """Called after every training batch; ``train_loop_obj.batch_loss`` is that batch's loss (a detached device
        tensor: ``.item()`` syncs with the device, so read it every few batches on a GPU)."""

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        """Called when the gradients for optimizer ``optimizer_idx`` are ready, just before its step."""

    def on_after_optimizer_step(self) -> None:
        """Called after every optimizer step."""

    def on_multiprocess_start(self) -> None:
        """Called in every process of a distributed run (after the process group is up), before ``on_train_begin``."""

    def on_after_batch_prediction(
        self, y_pred_batch: Any, y_test_batch: Any, metadata_batch: Any, dataset_info: dict[str, Any]
    ) -> None:
        """Called after each batch of a ``predict_on_*_set(execute_callbacks=True)`` with that batch's outputs
        (on the device) and ``{"type": "train" | "validation" | "test"}``."""

    def provided_metrics(self) -> Sequence[str] | None:
        """The training-history metrics this callback adds, or ``None`` when it cannot say (the default).

        When every callback of a run says, a metric that nothing produces (``EarlyStopping(monitor=...)``,
        checkpoint ranking) is refused before epoch 1 instead of failing at the first epoch end.

        .. versionadded:: 0.2
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """Return the callback's resumable state (plain data and tensors only); stateless callbacks return ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


AbstractCallback = Callback
"""The original AIToolbox name of :class:`Callback`."""


def check_metric_will_exist(tl: LoopView, monitor: str, what: str) -> None:
    """Refuse, before training, a ``monitor`` that no part of the run will put in the history.

    Known: ``loss``, ``val_loss`` (with a validation loader and ``end_auto_eval``), what the history already holds
    (a resumed run) and what every callback's :meth:`Callback.provided_metrics` lists. When a callback cannot say,
    nothing is refused here (the epoch-end check still is).
    """
    known = {"loss", *tl.train_history}
    if tl.validation_loader is not None and tl.end_auto_eval:
        known.add("val_loss")
    for cb in tl.callbacks:
        provided = cb.provided_metrics()
        if provided is None:
            return
        known.update(provided)
    if canonical_metric(monitor) not in known:
        raise LoopConfigError(
            f"{what} {monitor!r}, which nothing in this run puts in the training history (it will have "
            f"{sorted(known)}); monitor one of those, or add the callback that records it "
            "(e.g. ModelPerformanceEvaluation for val_<metric>)"
        )


def state_key_of(cb: Callback) -> str:
    """Where ``cb``'s state goes in a checkpoint: its :attr:`Callback.state_key` (``callback_name`` for a callback
    that is not a :class:`Callback`)."""
    return cb.state_key if isinstance(cb, Callback) else str(cb.callback_name)


def _stateful(cb: Callback) -> bool:
    return type(cb).state_dict is not Callback.state_dict


def check_state_keys(callbacks: Sequence[Callback]) -> None:
    """Refuse two stateful callbacks under one :func:`state_key_of`: on resume each must get its own state back,
    whatever the order the callbacks are given in.

    Raises:
        LoopConfigError: naming the key and both callbacks, with the fix.
    """
    seen: dict[str, Callback] = {}
    for cb in callbacks:
        if not _stateful(cb):
            continue
        key = state_key_of(cb)
        if key in seen:
            raise LoopConfigError(
                f"two callbacks keep their checkpoint state under the key {key!r} ({type(seen[key]).__name__} and "
                f"{type(cb).__name__}), so a resume could give each the other's; give one of them its own key, e.g. "
                f"cb.state_key = '{key}-2'"
            )
        seen[key] = cb


def callback_states(callbacks: Sequence[Callback]) -> dict[str, dict[str, Any]]:
    """The non-empty ``state_dict()`` of each callback, by :func:`state_key_of` (checked: :func:`check_state_keys`)."""
    check_state_keys(callbacks)
    return {state_key_of(cb): state for cb in callbacks if (state := cb.state_dict())}


def load_callback_states(callbacks: Sequence[Callback], states: dict[str, dict[str, Any]]) -> list[str]:
    """Give each callback its state from :func:`callback_states`; returns the keys no callback took.

    A checkpoint written before keys were explicit keyed states by ``callback_name`` (``#2`` for repeats, by
    order): such a name is given to the one callback of that name that found no state, never to one of several.
    """
    check_state_keys(callbacks)
    unknown = dict(states)
    waiting = []
    for cb in callbacks:
        key = state_key_of(cb)
        if key in unknown:
            cb.load_state_dict(unknown.pop(key))
        elif _stateful(cb):
            waiting.append(cb)
    for cb in waiting:
        named = [c for c in waiting if c.callback_name == cb.callback_name]
        if len(named) == 1 and cb.callback_name in unknown:
            cb.load_state_dict(unknown.pop(cb.callback_name))
    return sorted(unknown)
