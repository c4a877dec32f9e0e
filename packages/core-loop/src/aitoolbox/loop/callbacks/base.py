"""The callback base class. Subclass it and override only the hooks you need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aitoolbox.loop.train_loop import TrainLoop

__all__ = ["AbstractCallback", "Callback"]


class Callback:
    """Base class of TrainLoop callbacks: every hook is a documented no-op.

    The loop calls a hook only on the callbacks that override it, so an unused hook costs nothing. Inside a hook,
    ``self.train_loop_obj`` is the running :class:`~aitoolbox.loop.TrainLoop` (its ``epoch``, ``iteration``,
    ``train_history``, ``model``, ``optimizer`` ...). Set ``self.train_loop_obj.early_stop = True`` to stop
    training at the end of the current epoch.

    Hook order (see :meth:`aitoolbox.loop.TrainLoop.fit` for the whole loop)::

        on_train_loop_registration()          # once, when fit() registers the callback
        on_train_begin()
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

    def __init__(self, callback_name: str | None = None, execution_order: int = 0) -> None:
        self.callback_name = callback_name or type(self).__name__
        self.execution_order = execution_order
        self.train_loop_obj: TrainLoop | None = None

    def register_train_loop_object(self, train_loop_obj: TrainLoop) -> Callback:
        """Attach the callback to a TrainLoop and call :meth:`on_train_loop_registration`."""
        self.train_loop_obj = train_loop_obj
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
        """Called after every training batch; ``train_loop_obj.last_loss`` is that batch's loss (a device tensor)."""

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        """Called when the gradients for optimizer ``optimizer_idx`` are ready, just before its step."""

    def on_after_optimizer_step(self) -> None:
        """Called after every optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        """Return the callback's resumable state (plain data and tensors only); stateless callbacks return ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


AbstractCallback = Callback
"""The original AIToolbox name of :class:`Callback`."""
