"""The training-loop engine: :class:`TrainLoop`."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from aitoolbox.loop._device import CudaPrefetcher, move_to_device, resolve_device
from aitoolbox.loop._evaluation import evaluate_loss, predict
from aitoolbox.loop._loaders import resolve_fast_collate, with_fast_collate
from aitoolbox.loop._resume import capture_epoch_rng, restore_epoch_rng, skip_batches
from aitoolbox.loop.amp import AmpConfig, resolve_amp
from aitoolbox.loop.callbacks._dispatch import CallbackHandler, validate_callbacks
from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.callbacks.progress_bar import ProgressBar
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.history import TrainingHistory
from aitoolbox.loop.model import ModelWrap, TTModel, as_ttmodel

__all__ = ["TrainLoop"]

logger = logging.getLogger(__name__)

_GPU_MODES = ("single",)


def _is_loader(obj: object) -> bool:
    return hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, Callback))


def _as_optimizers(optimizer: object) -> list[torch.optim.Optimizer]:
    opts = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts):
        raise LoopConfigError(
            f"optimizer must be a torch.optim.Optimizer (or a list of them), got {type(optimizer).__name__}; "
            "e.g. optim.Adam(model.parameters(), lr=1e-3)"
        )
    return opts


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LoopConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class TrainLoop:
    """Train a model with plain PyTorch components: loaders, optimizer and loss exactly as you would write them.

    Args:
        model: a :class:`~aitoolbox.loop.TTModel`, or a plain ``nn.Module`` whose batches are
            ``(inputs..., target)`` (it is wrapped in :class:`~aitoolbox.loop.ModelWrap`).
        train_loader: the training DataLoader (any iterable of batches).
        validation_loader: DataLoader for ``val_loss`` at every epoch end, or ``None``.
        test_loader: DataLoader for the test set, or ``None``.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters, or a list of them.
        criterion: the loss function passed to ``model.get_loss``; may be ``None`` for a TTModel that needs none.
        device: where to train; ``None`` picks ``cuda`` when available, else ``cpu``.
        cuda_device_idx: the CUDA device index when ``device`` is ``None`` (original AIToolbox option).
        gpu_mode: ``'single'``. (Distributed ``'ddp'`` comes with the distributed release.)
        use_amp: mixed precision: ``False``, ``True``, ``'bf16'`` or ``'fp16'``
            (see :func:`~aitoolbox.loop.resolve_amp`).
        end_auto_eval: compute ``val_loss`` on the validation loader at every epoch end (when there is one).
        progress_bar: ``None`` shows a one-line-per-epoch tqdm bar when stderr is a terminal;
            ``True``/``False`` force it.
        prefetch: on CUDA, copy the next batch on a side stream while the current step runs (from pinned memory,
            ``DataLoader(pin_memory=True)``, the copy then overlaps compute). Off by default: batches are moved with
            ``non_blocking=True`` on the current stream, which lets the host run ahead and measured as fast as a
            hand-written loop, while the side stream cost ~160 us per step on a small, launch-bound model (see
            ``benchmarks/test_loop_overhead_gpu.py``). Turn it on for large batches and GPU-bound steps.
        fast_collate: collate with ``fastcollate.collate`` (the Rust drop-in for ``default_collate``: equal
            batches, reused and pinned output memory) in every given DataLoader that uses ``default_collate``;
            loaders with their own ``collate_fn`` are left alone, and the user's loaders are never modified (the
            loop iterates shallow copies). ``None`` (default): when the ``fastcollate`` package is installed;
            ``True``: require it; ``False``: never.

    Example:
        .. code-block:: python

            tl = TrainLoop(model, train_loader, val_loader, None, optimizer, criterion)
            model = tl.fit(num_epochs=10)
            tl.train_history["val_loss"]

    .. versionadded:: 0.1
    .. versionchanged:: 0.1.1
        ``fast_collate``.
    """

    def __init__(
        self,
        model: TTModel | nn.Module,
        train_loader: Iterable[Any],
        validation_loader: Iterable[Any] | None,
        test_loader: Iterable[Any] | None,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        criterion: Callable[..., torch.Tensor] | None,
        *,
        device: str | torch.device | None = None,
        cuda_device_idx: int | None = None,
        gpu_mode: str = "single",
        use_amp: Any = False,
        end_auto_eval: bool = True,
        progress_bar: bool | None = None,
        prefetch: bool = False,
        fast_collate: bool | None = None,
    ) -> None:
        self._tt: TTModel = as_ttmodel(model)
        self.model = model
        if not _is_loader(train_loader):
            raise LoopConfigError(
                f"train_loader must be a DataLoader (or another iterable of batches), got {type(train_loader).__name__}"
            )
        for name, loader in (("validation_loader", validation_loader), ("test_loader", test_loader)):
            if loader is not None and not _is_loader(loader):
                raise LoopConfigError(f"{name} must be a DataLoader or None, got {type(loader).__name__}")
        self.train_loader = train_loader
        self.validation_loader = validation_loader
        self.test_loader = test_loader
        self.optimizers = _as_optimizers(optimizer)
        self.optimizer = optimizer
        self._check_optimizer_params()
        if criterion is not None and not callable(criterion):
            raise LoopConfigError(
                f"criterion must be callable (e.g. nn.CrossEntropyLoss()), got {type(criterion).__name__}"
            )
        if criterion is None and isinstance(self._tt, ModelWrap):
            raise LoopConfigError(
                f"criterion is None but {type(model).__name__} is a plain nn.Module whose loss is "
                "criterion(output, target); pass a loss function such as nn.CrossEntropyLoss()"
            )
        self.criterion = criterion
        if gpu_mode not in _GPU_MODES:
            raise LoopConfigError(
                f"gpu_mode={gpu_mode!r} is not supported by this release; use gpu_mode='single' "
                "(multi-GPU training via torchrun arrives with the distributed package)"
            )
        self.gpu_mode = gpu_mode
        self.device = resolve_device(device, cuda_device_idx)
        self.amp: AmpConfig = resolve_amp(use_amp, self.device)
        self.use_amp = use_amp
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if self.amp.use_grad_scaler else None
        if progress_bar is not None and not isinstance(progress_bar, bool):
            raise LoopConfigError(f"progress_bar must be True, False or None, got {progress_bar!r}")
        self.progress_bar = progress_bar
        if not isinstance(prefetch, bool):
            raise LoopConfigError(f"prefetch must be True or False, got {prefetch!r}")
        self.prefetch = prefetch
        self.fast_collate = resolve_fast_collate(fast_collate)
        self._run_loaders: dict[str, tuple[Any, Any]] = {}
        self.end_auto_eval = bool(end_auto_eval)
        self._tt.to(self.device)

        self.train_history = TrainingHistory()
        self.epoch = 0
        self.iteration = 0
        self.num_epochs = 0
        self.num_iterations = 0
        self.grad_accumulation = 1
        self.early_stop = False
        self.stop_reason: str | None = None
        self.last_loss: torch.Tensor | None = None
        self.batch_in_epoch = 0
        self.callbacks: list[Callback] = []
        self._handler = CallbackHandler([])
        self._epoch_complete = False
        self._epoch_loss_host = 0.0
        self._epoch_loss_dev: torch.Tensor | None = None
        self._epoch_start_rng: dict[str, Any] | None = None
        self._resume_plan: dict[str, Any] | None = None

    # ------------------------------------------------------------------ validation

    def _check_optimizer_params(self) -> None:
        model_params = {id(p) for p in self._tt.parameters()}
        for i, opt in enumerate(self.optimizers):
            opt_params = [p for group in opt.param_groups for p in group["params"]]
            if opt_params and not any(id(p) in model_params for p in opt_params):
                raise LoopConfigError(
                    f"optimizer {i} holds none of the model's parameters; create it after the model, "
                    "from this model's parameters: optim.Adam(model.parameters(), ...)"
                )

    @property
    def total_iteration_idx(self) -> int:
        """The original AIToolbox name of :attr:`iteration` (global batch counter, 0-based)."""
        return self.iteration

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        num_epochs: int = 0,
        num_iterations: int = 0,
        callbacks: Sequence[Callback] | None = None,
        grad_accumulation: int = 1,
    ) -> TTModel | nn.Module:
        """Train for ``num_epochs`` epochs or ``num_iterations`` batches, and return the model.

        The loop, with the hooks it calls on every callback that overrides them::

            register callbacks -> cb.on_train_loop_registration()
            on_train_begin()
            for epoch in range(num_epochs):               # or until num_iterations batches
                on_epoch_begin()
                for batch in train_loader:                # next batch copied on a CUDA side stream
                    on_batch_begin()
                    with autocast: loss = model.get_loss(batch, criterion, device)
                    backward(loss / grad_accumulation)    # scaled by GradScaler for fp16
                    if grad_accumulation batches done (or the epoch ends):
                        for each optimizer i: [unscale] on_after_gradient_update(i); optimizer.step()
                        on_after_optimizer_step(); zero_grad(set_to_none=True)
                    on_batch_end()
                history['loss'] = mean batch loss; history['val_loss'] = validation loss
                on_epoch_end()                            # may set early_stop
            on_train_end()

        The training loss is accumulated without a host-device sync per step and read once per epoch.

        Args:
            num_epochs: how many epochs to train (exactly one of ``num_epochs``/``num_iterations`` is given).
            num_iterations: how many batches to train; the epoch in which the count is reached is closed normally.
            callbacks: :class:`~aitoolbox.loop.callbacks.Callback` instances.
            grad_accumulation: number of batches whose gradients are summed before each optimizer step.

        Returns:
            The trained model (the object given to the constructor).

        Raises:
            LoopConfigError: invalid arguments, an empty training loader, or a callback that is not a Callback.
        """
        self._validate_fit_args(num_epochs, num_iterations, grad_accumulation)
        callbacks_checked = validate_callbacks(callbacks)
        if not any(isinstance(cb, ProgressBar) for cb in callbacks_checked) and self._show_progress():
            callbacks_checked.append(ProgressBar())
        self.num_epochs = self.epoch + num_epochs if num_epochs else 0
        self.num_iterations = self.iteration + num_iterations if num_iterations else 0
        self.grad_accumulation = grad_accumulation
        self.early_stop = False
        self.stop_reason = None
        self.callbacks = callbacks_checked
        for cb in self.callbacks:
            cb.register_train_loop_object(self)
        self._handler = CallbackHandler(self.callbacks)
        self._on_fit_start()
        try:
            self._train()
        except BaseException:
            logger.error("training failed in epoch %d at iteration %d", self.epoch, self.iteration)
            raise
        return self.model

    def _on_fit_start(self) -> None:
        """Extension point for subclasses: runs in ``fit`` after the callbacks are registered, before training."""

    def _show_progress(self) -> bool:
        if self.progress_bar is not None:
            return self.progress_bar
        return bool(getattr(sys.stderr, "isatty", lambda: False)())

    def _validate_fit_args(self, num_epochs: object, num_iterations: object, grad_accumulation: object) -> None:
        _check_int("num_epochs", num_epochs, 0)
        _check_int("num_iterations", num_iterations, 0)
        if bool(num_epochs) == bool(num_iterations):
            raise LoopConfigError(
                "give exactly one of num_epochs and num_iterations as a positive int, "
                f"got num_epochs={num_epochs!r}, num_iterations={num_iterations!r}"
            )
        if isinstance(grad_accumulation, bool) or not isinstance(grad_accumulation, int) or grad_accumulation < 1:
            raise LoopConfigError(f"grad_accumulation must be a positive int, got {grad_accumulation!r}")
        try:
            n_batches = len(self.train_loader)  # type: ignore[arg-type]
        except TypeError:
            n_batches = None  # iterable-style loader: checked after the first epoch
        if n_batches == 0:
            raise LoopConfigError(
                "train_loader is empty (0 batches); check the dataset size and that batch_size <= len(dataset) "
                "when drop_last=True"
            )

    def _done(self) -> bool:
        if self.early_stop:
            return True
        if self.num_iterations:
            return self.iteration >= self.num_iterations
        return self.epoch >= self.num_epochs

    def _train(self) -> None:
        handler = self._handler
        self._tt.train()
        handler.call("on_train_begin")
        start = time.perf_counter()
        while not self._done():
            handler.call("on_epoch_begin")
            epoch_start = time.perf_counter()
            mean_loss = self._train_epoch()
            self.train_history.insert_single_result_into_history("loss", mean_loss)
            if not math.isfinite(mean_loss):
                logger.warning(
                    "epoch %d: the training loss is %s; add TerminateOnNaN() to stop at the first bad iteration",
                    self.epoch,
                    mean_loss,
                )
            if self.end_auto_eval and self.validation_loader is not None:
                self.train_history.insert_single_result_into_history("val_loss", self.evaluate_loss_on_validation_set())
            logger.info(
                "epoch %d: loss %.4f%s (%.2f s)",
                self.epoch,
                mean_loss,
                f", val_loss {self.train_history.get_last('val_loss'):.4f}" if "val_loss" in self.train_history else "",
                time.perf_counter() - epoch_start,
            )
            handler.call("on_epoch_end")
            self.epoch += 1
            self._epoch_complete = False
        handler.call("on_train_end")
        logger.info(
            "training finished: %d epochs, %d iterations in %.1f s%s",
            self.epoch,
            self.iteration,
            time.perf_counter() - start,
            f" (stopped: {self.stop_reason})" if self.stop_reason else "",
        )

    def _train_epoch(self) -> float:
        """One pass over the training loader; returns the mean batch loss (one host read at the end)."""
        tt, criterion, device = self._tt, self.criterion, self.device
        by_hook = self._handler.by_hook
        cb_batch_begin = by_hook["on_batch_begin"]
        cb_batch_end = by_hook["on_batch_end"]
        accum = self.grad_accumulation
        scaler = self.grad_scaler
        on_cpu = device.type == "cpu"
        loader, n, loss_sum_host, loss_sum_dev = self._epoch_start()
        move = False
        if device.type == "cuda" and self.prefetch:
            loader = CudaPrefetcher(loader, device)
        elif not on_cpu:
            move = True
        autocast = torch.autocast(device_type=device.type, dtype=self.amp.dtype) if self.amp.enabled else None
        stop_at = self.num_iterations
        for batch in loader:
            for cb in cb_batch_begin:
                cb.on_batch_begin()
            if move:
                batch = move_to_device(batch, device)
            if autocast is None:
                loss = tt.get_loss(batch, criterion, device)
            else:
                with autocast:
                    loss = tt.get_loss(batch, criterion, device)
            self.last_loss = loss
            scaled = loss if accum == 1 else loss / accum
            if scaler is None:
                scaled.backward()
            else:
                scaler.scale(scaled).backward()
            if loss_sum_dev is None:
                loss_sum_host += loss.item()  # free on CPU: no device to wait for
                self._epoch_loss_host = loss_sum_host
            else:
                loss_sum_dev += loss.detach()
            n += 1
            self.batch_in_epoch = n
            if n % accum == 0:
                self._optimizer_step()
            self.iteration += 1
            for cb in cb_batch_end:
                cb.on_batch_end()
            if self.early_stop or (stop_at and self.iteration >= stop_at):
                break
        if n == 0:
            raise LoopConfigError(
                f"train_loader yielded no batches in epoch {self.epoch}; it must yield at least one batch per epoch"
            )
        if n % accum:
            self._optimizer_step()  # the epoch's last, partial accumulation
        self._epoch_complete = True
        total = loss_sum_host if loss_sum_dev is None else float(loss_sum_dev.item())
        return total / n

    def _epoch_start(self) -> tuple[Iterable[Any], int, float, torch.Tensor | None]:
        """The epoch's loader and its loss accumulators: fresh, or continued from a mid-epoch checkpoint."""
        self._epoch_complete = False
        self.batch_in_epoch = 0
        plan, self._resume_plan = self._resume_plan, None
        loader: Iterable[Any] = self._run_loader("train_loader", self.train_loader)
        skip, loss_sum = 0, 0.0
        if plan is not None and plan["batch_in_epoch"] > 0:
            skip, loss_sum = plan["batch_in_epoch"], plan["epoch_loss_sum"]
            resume_rng = torch.get_rng_state()  # the checkpoint's state, restored by the caller
            restore_epoch_rng(loader, plan["epoch_start_rng"])
            self._epoch_start_rng = plan["epoch_start_rng"]
            loader = skip_batches(loader, skip, lambda: torch.set_rng_state(resume_rng))
            self.batch_in_epoch = skip
        else:
            self._epoch_start_rng = capture_epoch_rng(loader)
        self._epoch_loss_host = loss_sum
        if self.device.type == "cpu":
            self._epoch_loss_dev = None
        else:
            self._epoch_loss_dev = torch.full((), loss_sum, dtype=torch.float32, device=self.device)
        return loader, skip, loss_sum, self._epoch_loss_dev

    # ------------------------------------------------------------------ resumable state

    def state_dict(self) -> dict[str, Any]:
        """The loop's resumable state: position, history, loss accumulators, sampling RNG and GradScaler.

        Plain data and tensors only. Taken at an epoch end, the position is the start of the next epoch; taken inside
        an epoch (after an optimizer step), it is the batch reached, and :meth:`load_state_dict` makes the next
        :meth:`fit` skip the consumed batches (by sampler arithmetic) with the same sampling as the original run.
        Model, optimizer and callback states are not included: the caller saves them beside this.
        """
        if self._epoch_complete or self.batch_in_epoch == 0:
            epoch, batch, loss_sum = self.epoch + (1 if self._epoch_complete else 0), 0, 0.0
        else:
            if self.batch_in_epoch % self.grad_accumulation:
                raise LoopConfigError(
                    f"the loop is inside a gradient accumulation (batch {self.batch_in_epoch} of epoch {self.epoch}, "
                    f"grad_accumulation={self.grad_accumulation}); save state after an optimizer step"
                )
            epoch, batch = self.epoch, self.batch_in_epoch
            dev = self._epoch_loss_dev
            loss_sum = self._epoch_loss_host if dev is None else float(dev.item())
        return {
            "epoch": epoch,
            "iteration": self.iteration,
            "batch_in_epoch": batch,
            "epoch_loss_sum": loss_sum,
            "accumulation_phase": 0,
            "grad_accumulation": self.grad_accumulation,
            "epoch_start_rng": self._epoch_start_rng if batch else None,
            "history": self.train_history.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the next :meth:`fit` continues from that position."""
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.train_history.load_state_dict(state["history"])
        if state.get("grad_scaler") is not None:
            if self.grad_scaler is None:
                raise LoopConfigError("the checkpoint holds GradScaler state but use_amp does not use fp16 here")
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self._resume_plan = dict(state) if state["batch_in_epoch"] else None
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self._epoch_complete = False

    def _optimizer_step(self) -> None:
        scaler = self.grad_scaler
        cb_grad = self._handler.by_hook["on_after_gradient_update"]
        for idx, opt in enumerate(self.optimizers):
            if cb_grad:
                if scaler is not None:
                    scaler.unscale_(opt)
                for cb in cb_grad:
                    cb.on_after_gradient_update(idx)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
        if scaler is not None:
            scaler.update()
        for cb in self._handler.by_hook["on_after_optimizer_step"]:
            cb.on_after_optimizer_step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ evaluation API

    def _loader(self, name: str) -> Iterable[Any]:
        loader = getattr(self, name)
        if loader is None:
            raise LoopConfigError(f"{name} is None; pass it to the TrainLoop constructor to evaluate on it")
        return self._run_loader(name, loader)

    def _run_loader(self, name: str, loader: Iterable[Any]) -> Iterable[Any]:
        """The loader the loop iterates for the user's ``loader``: derived once (and again if it is replaced)."""
        cached = self._run_loaders.get(name)
        if cached is not None and cached[0] is loader:
            return cached[1]  # type: ignore[no-any-return]
        derived = self._derive_loader(name, loader)
        self._run_loaders[name] = (loader, derived)
        return derived

    def _derive_loader(self, name: str, loader: Iterable[Any]) -> Iterable[Any]:
        """Hook: what the loop adds to a user's loader (fast collation here; sharding in distributed runs)."""
        return with_fast_collate(loader) if self.fast_collate else loader

    def evaluate_loss_on_train_set(self) -> float:
        """Loss over the whole training set, weighted by batch size, in eval mode (global RNG untouched)."""
        return evaluate_loss(self._tt, self._loader("train_loader"), self.criterion, self.device, self.amp)

    def evaluate_loss_on_validation_set(self) -> float:
        """Loss over the validation set, weighted by batch size, in eval mode (global RNG untouched)."""
        return evaluate_loss(self._tt, self._loader("validation_loader"), self.criterion, self.device, self.amp)

    def evaluate_loss_on_test_set(self) -> float:
        """Loss over the test set, weighted by batch size, in eval mode (global RNG untouched)."""
        return evaluate_loss(self._tt, self._loader("test_loader"), self.criterion, self.device, self.amp)

    def predict_on_train_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the training set, concatenated on the CPU."""
        return predict(self._tt, self._loader("train_loader"), self.device, self.amp)

    def predict_on_validation_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the validation set, concatenated on the CPU."""
        return predict(self._tt, self._loader("validation_loader"), self.device, self.amp)

    def predict_on_test_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the test set, concatenated on the CPU."""
        return predict(self._tt, self._loader("test_loader"), self.device, self.amp)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, device={self.device}, "
            f"epoch={self.epoch}, iteration={self.iteration})"
        )
