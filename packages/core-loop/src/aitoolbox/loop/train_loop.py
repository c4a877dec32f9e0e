"""The training-loop engine: :class:`TrainLoop`."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from aitoolbox.loop import _distributed
from aitoolbox.loop._device import CudaPrefetcher, move_to_device, resolve_device
from aitoolbox.loop._distributed import DistributedContext
from aitoolbox.loop._evaluation import check_loss, evaluate_loss_sum, predict
from aitoolbox.loop._loaders import resolve_fast_collate, with_fast_collate
from aitoolbox.loop._resume import (
    capture_data_rng,
    capture_epoch_rng,
    data_layout,
    layout_changes,
    not_replayed,
    restore_data_rng,
    restore_epoch_rng,
    skip_batches,
)
from aitoolbox.loop.amp import AmpConfig, resolve_amp
from aitoolbox.loop.callbacks._dispatch import CallbackHandler, validate_callbacks
from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.callbacks.progress_bar import ProgressBar
from aitoolbox.loop.errors import LoopConfigError, ResumeMismatchError
from aitoolbox.loop.history import TrainingHistory
from aitoolbox.loop.model import ModelWrap, TTModel, as_ttmodel

__all__ = ["TrainLoop"]

logger = logging.getLogger(__name__)

_GPU_MODES = ("single", "ddp")


def _is_loader(obj: object) -> bool:
    return hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, Callback))


def _as_optimizers(optimizer: object) -> list[torch.optim.Optimizer]:
    opts = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    classes = [o for o in opts if isinstance(o, type)]
    if classes:
        raise LoopConfigError(
            f"optimizer is the class {classes[0].__name__}, not an optimizer; pass an instance built on the model's "
            f"parameters: {classes[0].__name__}(model.parameters(), lr=...)"
        )
    if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts):
        raise LoopConfigError(
            f"optimizer must be a torch.optim.Optimizer (or a list of them), got {type(optimizer).__name__}; "
            "e.g. optim.Adam(model.parameters(), lr=1e-3)"
        )
    return opts


def _len_or_none(loader: object) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _refuse_empty(name: str, loader: object, fix: str = "") -> None:
    """A loader whose ``len`` is 0 is refused before training (iterable-style loaders are checked when they run)."""
    if _len_or_none(loader) == 0:
        raise LoopConfigError(
            f"{name} is empty (0 batches); check the dataset size and that batch_size <= len(dataset) when "
            f"drop_last=True{fix}"
        )


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
        gpu_mode: ``'single'`` or ``'ddp'``. Under ``torchrun`` (``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` set) every
            variant trains distributed data parallel whatever this says: process group (nccl on CUDA, gloo on CPU),
            the model in ``DistributedDataParallel`` on ``cuda:LOCAL_RANK``, the training loader sharded by a
            ``DistributedSampler`` (every other DataLoader option kept, ``set_epoch`` each epoch), evaluation
            sharded without padding and gathered in dataset order, only rank 0 writing. ``'ddp'`` from a plain
            ``python`` process makes ``fit`` start ``num_processes`` workers through torch's elastic launcher
            and return the trained model to the caller.
        num_processes: workers for ``gpu_mode='ddp'`` from a plain process (default: the number of GPUs).
        ddp_options: keyword arguments for ``DistributedDataParallel`` (e.g. ``{"find_unused_parameters": True}``).
        use_amp: mixed precision: ``False``, ``True``, ``'bf16'`` or ``'fp16'``
            (see :func:`~aitoolbox.loop.resolve_amp`).
        end_auto_eval: compute ``val_loss`` on the validation loader at every epoch end (when there is one);
            an int ``N`` computes it every N-th epoch (0-based epochs 0, N, 2N..., as the original), ``False``
            never.
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
            loop iterates shallow copies). A batch fastcollate declines (e.g. a float64 row among float32 ones,
            which ``default_collate`` promotes) is collated by ``default_collate``: what trains with plain PyTorch
            trains here. ``None`` (default): when the ``fastcollate`` package is installed; ``True``: require it;
            ``False``: never.

    Example:
        .. code-block:: python

            tl = TrainLoop(model, train_loader, val_loader, None, optimizer, criterion)
            model = tl.fit(num_epochs=10)
            tl.train_history["val_loss"]

    .. versionadded:: 0.1
    .. versionchanged:: 0.1.1
        ``fast_collate``.
    .. versionchanged:: 0.2
        ``end_auto_eval`` takes an int N (every N epochs); ``epoch`` and ``total_iteration_idx`` have the original
        AIToolbox's meaning; ``epochs_done``; declined batches fall back to ``default_collate``.
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
        end_auto_eval: bool | int = True,
        progress_bar: bool | None = None,
        prefetch: bool = False,
        fast_collate: bool | None = None,
        num_processes: int | None = None,
        ddp_options: dict[str, Any] | None = None,
    ) -> None:
        self._tt: TTModel = as_ttmodel(model)
        self.model = model
        if not _is_loader(train_loader):
            hint = (
                "; wrap the dataset: DataLoader(dataset, batch_size=..., shuffle=True)"
                if hasattr(train_loader, "__getitem__") and hasattr(train_loader, "__len__")
                else ""
            )
            raise LoopConfigError(
                "train_loader must be a DataLoader (or another iterable of batches), got "
                f"{type(train_loader).__name__}{hint}"
            )
        for name, loader in (("validation_loader", validation_loader), ("test_loader", test_loader)):
            if loader is not None and not _is_loader(loader):
                raise LoopConfigError(f"{name} must be a DataLoader or None, got {type(loader).__name__}")
            if loader is not None:
                _refuse_empty(name, loader, ", or pass None")
        self.train_loader = train_loader
        self.validation_loader = validation_loader
        self.test_loader = test_loader
        self.optimizers = _as_optimizers(optimizer)
        self.optimizer = optimizer
        self._check_optimizer_params()
        if isinstance(criterion, type):
            raise LoopConfigError(
                f"criterion is the class {criterion.__name__}, not a loss function; pass an instance: "
                f"{criterion.__name__}()"
            )
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
                f"gpu_mode must be 'single' or 'ddp', got {gpu_mode!r} (for several GPUs launch with torchrun, "
                "or use gpu_mode='ddp')"
            )
        self.gpu_mode = gpu_mode
        if num_processes is not None:
            _check_int("num_processes", num_processes, 1)
        self.num_processes = num_processes
        if ddp_options is not None and not isinstance(ddp_options, dict):
            raise LoopConfigError(
                f"ddp_options must be a dict of DistributedDataParallel arguments, got {ddp_options!r}"
            )
        self.ddp_options = dict(ddp_options or {})
        self._device_request = (device, cuda_device_idx)
        if self._will_launch():  # the workers are forked: this process must not initialise CUDA
            self.device = _distributed.parent_device(device, cuda_device_idx)
        else:
            self.device = resolve_device(_distributed.rank_device(device), cuda_device_idx)
        self.distributed: DistributedContext | None = None
        self._ddp: nn.Module | None = None
        self._sampler_seed = 0
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
        self._sharded_eval: set[str] = set()
        if isinstance(end_auto_eval, bool) or (isinstance(end_auto_eval, int) and end_auto_eval >= 1):
            self.end_auto_eval: bool | int = end_auto_eval
        else:
            raise LoopConfigError(
                f"end_auto_eval must be True, False or an int N >= 1 (every N epochs), got {end_auto_eval!r}"
            )
        if not (self._will_launch() and self.device.type == "cuda"):  # launched workers place the model themselves
            self._tt.to(self.device)

        self.train_history = TrainingHistory()
        #: 0-based index of the epoch being trained; after training (and in ``on_train_end``), of the last one
        self.epoch = 0
        #: training batches done so far, over every epoch and ``fit`` (what ``num_iterations`` counts)
        self.iteration = 0
        #: 0-based global index of the batch being trained (from ``on_batch_begin`` to ``on_batch_end``), of the last
        #: one after it; -1 before the first batch (the original AIToolbox's counter)
        self.total_iteration_idx = -1
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
        self._data_rng_pending: dict[str, Any] | None = None
        self._resume_strict = True
        self._epoch_batches = 0

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
    def epochs_done(self) -> int:
        """How many epochs are complete: :attr:`epoch` + 1 once the current epoch has ended, else :attr:`epoch`.

        .. versionadded:: 0.2
        """
        return self.epoch + 1 if self._epoch_complete else self.epoch

    # ------------------------------------------------------------------ distributed

    @property
    def is_main_process(self) -> bool:
        """True where this process writes checkpoints and results and logs: rank 0, or any non-distributed run."""
        if self.distributed is not None:
            return self.distributed.is_main
        return _distributed.launched_rank() == 0

    def _will_launch(self) -> bool:
        """``gpu_mode='ddp'`` in a plain process: ``fit`` starts the workers."""
        return self.gpu_mode == "ddp" and not _distributed.launched()

    def _ensure_distributed(self) -> None:
        """In a torchrun-launched process: process group, this rank's device, DDP and the sampling seed (once)."""
        if self.distributed is not None or not _distributed.launched():
            return
        device, index = self._device_request
        self.device = resolve_device(_distributed.rank_device(device), index)
        self._tt.to(self.device)
        ctx = _distributed.setup(self.device)
        self.distributed = ctx
        self._sampler_seed = int(ctx.broadcast(torch.initial_seed() % 2**62))
        self._ddp = ctx.wrap(self._tt, self.device, self.ddp_options)
        if ctx.owns_group:
            _distributed.release_at_exit(self)
        self._run_loaders.clear()
        if ctx.is_main:
            logger.info("distributed data parallel: %d processes, backend %s", ctx.world_size, ctx.backend)

    def _release_distributed(self) -> None:
        """Called at exit, before the process group this library created is destroyed: drops the DDP wrapper and
        the control group, which would otherwise keep the groups alive into interpreter finalisation."""
        self._ddp = None
        if self.distributed is not None:
            self.distributed.control_group = None

    def _launch(self, fit: Callable[..., Any], kwargs: dict[str, Any]) -> TTModel | nn.Module:
        """Run ``fit(**kwargs)`` in ``num_processes`` workers (torch's elastic launcher); adopt rank 0's result."""
        from aitoolbox.loop._launch import launch_fit

        if self.device.type == "cuda" and torch.cuda.is_initialized():
            raise LoopConfigError(
                "gpu_mode='ddp' forks its workers, and CUDA was already initialised in this process (a tensor or "
                "model was put on the GPU before fit); CUDA cannot be used in forked workers then. Create the "
                "TrainLoop before touching the GPU, or launch the script with torchrun instead"
            )
        result = launch_fit(fit, kwargs, self._launch_processes())
        self._import_run(result)
        return self.model

    def _launch_processes(self) -> int:
        if self.num_processes is not None:
            return self.num_processes
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
        raise LoopConfigError(
            "gpu_mode='ddp' needs num_processes=N here: there is no GPU to count (on CPU the workers use gloo)"
        )

    def _export_run(self) -> dict[str, Any]:
        """What a launched rank 0 hands back to the process that called ``fit`` (plain, picklable data)."""
        return {
            "model": {k: v.detach().cpu() for k, v in self._tt.state_dict().items()},
            "history": self.train_history.state_dict(),
            "epoch": self.epoch,
            "epoch_complete": self._epoch_complete,
            "iteration": self.iteration,
            "early_stop": self.early_stop,
            "stop_reason": self.stop_reason,
        }

    def _import_run(self, result: dict[str, Any]) -> None:
        self._tt.load_state_dict(result["model"])
        self.train_history.load_state_dict(result["history"])
        self.epoch, self.iteration = result["epoch"], result["iteration"]
        self._epoch_complete = result["epoch_complete"]
        self.total_iteration_idx = self.iteration - 1
        self.early_stop, self.stop_reason = result["early_stop"], result["stop_reason"]

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        num_epochs: int = 0,
        num_iterations: int = 0,
        callbacks: Sequence[Callback] | None = None,
        grad_accumulation: int = 1,
    ) -> TTModel | nn.Module:
        """Train for ``num_epochs`` epochs or ``num_iterations`` batches, and return the model.

        The loop, with the hooks it calls on every callback that overrides them, and the counters each hook sees::

            register callbacks -> cb.on_train_loop_registration()
            on_train_begin()                              # epoch: 0 (or the resumed one), total_iteration_idx: -1
            for epoch in range(num_epochs):               # or until num_iterations batches
                on_epoch_begin()                          # epoch: this epoch's 0-based index
                for batch in train_loader:                # next batch copied on a CUDA side stream
                    total_iteration_idx = iteration       # the batch's 0-based global index
                    on_batch_begin()                      # iteration: batches done before this one
                    with autocast: loss = model.get_loss(batch, criterion, device)
                    backward(loss / grad_accumulation)    # scaled by GradScaler for fp16
                    if grad_accumulation batches done (or the epoch ends):
                        for each optimizer i: [unscale] on_after_gradient_update(i); optimizer.step()
                        on_after_optimizer_step(); zero_grad(set_to_none=True)
                    iteration += 1
                    on_batch_end()                        # total_iteration_idx: still this batch's index
                history['loss'] = mean batch loss; history['val_loss'] = validation loss
                on_epoch_end()                            # may set early_stop; epoch: still this epoch's index
            on_train_end()                                # epoch, total_iteration_idx: the last epoch's and batch's

        After ``fit``, ``epoch`` is the last epoch's index and ``total_iteration_idx`` the last batch's (the original
        AIToolbox's counters), ``iteration`` the number of batches trained and :attr:`epochs_done` the number of
        complete epochs.

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
        if self._will_launch():
            kwargs = {"num_epochs": num_epochs, "num_iterations": num_iterations, "callbacks": callbacks}
            return self._launch(self.fit, {**kwargs, "grad_accumulation": grad_accumulation})
        self._ensure_distributed()
        callbacks_checked = validate_callbacks(callbacks)
        if not any(isinstance(cb, ProgressBar) for cb in callbacks_checked) and self._show_progress():
            callbacks_checked.append(ProgressBar())
        self.num_epochs = self.epochs_done + num_epochs if num_epochs else 0
        self.num_iterations = self.iteration + num_iterations if num_iterations else 0
        self.grad_accumulation = grad_accumulation
        self.early_stop = False
        self.stop_reason = None
        if self._resume_plan is not None:
            self._check_resume_plan()
        self.callbacks = callbacks_checked
        for cb in self.callbacks:
            cb.register_train_loop_object(self)
        self._handler = CallbackHandler(self.callbacks)
        self._on_fit_start()
        try:
            self._train()
        except BaseException as err:
            logger.error("training failed in epoch %d at iteration %d", self.epoch, self.iteration)
            if self.distributed is not None and isinstance(err, Exception):
                _distributed.record_failure(err)  # torchrun's summary then names this rank's error
            raise
        return self.model

    def _check_resume_plan(self) -> None:
        """A mid-epoch resume skips the consumed batches by count: refuse when the count no longer means them."""
        plan = self._resume_plan
        assert plan is not None
        changes = layout_changes(plan.get("data_layout") or {}, data_layout(self.train_loader))
        if plan["grad_accumulation"] != self.grad_accumulation:
            changes.append(f"grad_accumulation {plan['grad_accumulation']} -> {self.grad_accumulation}")
        if not changes:
            return
        what = (
            f"the run is resumed at batch {plan['batch_in_epoch']} of epoch {plan['epoch']}, but since it was "
            f"saved: {', '.join(changes)}"
        )
        if self._resume_strict:
            self._resume_plan = None
            raise ResumeMismatchError(
                f"{what}; the skipped batches would not be the ones already trained on. Resume with the original "
                "settings, from an epoch-end checkpoint, or accept the difference (allow_resume_changes=True in "
                "fit, strict=False in load_state_dict)"
            )
        logger.warning("%s: continuing anyway, as asked", what)

    def _on_fit_start(self) -> None:
        """Extension point for subclasses: runs in ``fit`` after the callbacks are registered, before training."""

    def _show_progress(self) -> bool:
        if not self.is_main_process:
            return False
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
        _refuse_empty("train_loader", self.train_loader)

    def _done(self) -> bool:
        if self.early_stop:
            return True
        if self.num_iterations:
            return self.iteration >= self.num_iterations
        return self.epochs_done >= self.num_epochs

    def _train(self) -> None:
        handler = self._handler
        log = logger.info if self.is_main_process else logger.debug
        self._tt.train()
        handler.call("on_train_begin")
        start = time.perf_counter()
        while not self._done():
            if self._epoch_complete:  # the next epoch begins: epoch stays the last one's index between epochs
                self.epoch += 1
                self._epoch_complete = False
            handler.call("on_epoch_begin")
            epoch_start = time.perf_counter()
            mean_loss = self._train_epoch()
            if self.distributed is not None:  # the mean over every rank's batches: the same history everywhere
                total, batches = self.distributed.sum([mean_loss * self._epoch_batches, self._epoch_batches])
                mean_loss = total / batches
            self.train_history.insert_single_result_into_history("loss", mean_loss)
            if not math.isfinite(mean_loss) and self.is_main_process:
                logger.warning(
                    "epoch %d: the training loss is %s; add TerminateOnNaN() to stop at the first bad iteration",
                    self.epoch,
                    mean_loss,
                )
            if self._auto_eval_due() and self.validation_loader is not None:
                self.train_history.insert_single_result_into_history("val_loss", self.evaluate_loss_on_validation_set())
            log(
                "epoch %d: loss %.4f%s (%.2f s)",
                self.epoch,
                mean_loss,
                f", val_loss {self.train_history.get_last('val_loss'):.4f}" if "val_loss" in self.train_history else "",
                time.perf_counter() - epoch_start,
            )
            handler.call("on_epoch_end")
            if self.distributed is not None and self.distributed.any(self.early_stop) and not self.early_stop:
                self.early_stop = True  # another rank's callback stopped: every rank stops after this epoch
                self.stop_reason = self.stop_reason or "stopped on another rank"
        handler.call("on_train_end")
        log(
            "training finished: %d epochs, %d iterations in %.1f s%s",
            self.epochs_done,
            self.iteration,
            time.perf_counter() - start,
            f" (stopped: {self.stop_reason})" if self.stop_reason else "",
        )

    def _auto_eval_due(self) -> bool:
        """``val_loss`` this epoch: every epoch for ``end_auto_eval=True``, epochs 0, N, 2N... for an int N."""
        auto = self.end_auto_eval
        if isinstance(auto, bool):
            return auto
        return self.epoch % auto == 0

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
        get_loss = tt.get_loss if self._ddp is None else self._ddp  # DDP: the forward that arms gradient all-reduce
        ctx = self.distributed
        sync_stop = ctx is not None and any(
            cb.stops_mid_epoch
            for hook in ("on_batch_begin", "on_batch_end", "on_after_gradient_update", "on_after_optimizer_step")
            for cb in by_hook[hook]
        )
        no_sync = self._ddp.no_sync if self._ddp is not None and accum > 1 else None  # type: ignore[operator]
        synced = contextlib.nullcontext()  # reusable: nothing is allocated per step
        remaining = _len_or_none(loader)
        last_batch = None if remaining is None else n + remaining  # the epoch's batch count (resumed ones included)
        move = False
        if device.type == "cuda" and self.prefetch:
            loader = CudaPrefetcher(loader, device)
        elif not on_cpu:
            move = True
        autocast = torch.autocast(device_type=device.type, dtype=self.amp.dtype) if self.amp.enabled else None
        stop_at = self.num_iterations
        unchecked = True  # the first loss of the epoch is checked (one branch per step, no sync)
        for batch in loader:
            self.total_iteration_idx = self.iteration
            for cb in cb_batch_begin:
                cb.on_batch_begin()
            if move:
                batch = move_to_device(batch, device)
            # DDP: between optimizer steps, skip the gradient all-reduce (it runs on the step's last micro-batch)
            local = no_sync is not None and (n + 1) % accum != 0 and (last_batch is None or n + 1 < last_batch)
            with no_sync() if local else synced:  # type: ignore[misc]
                if autocast is None:
                    loss = get_loss(batch, criterion, device)
                else:
                    with autocast:
                        loss = get_loss(batch, criterion, device)
                if unchecked:
                    check_loss(tt, "get_loss", loss, needs_grad=torch.is_grad_enabled())
                    unchecked = False
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
            if sync_stop and ctx.any(self.early_stop):  # type: ignore[union-attr]
                self.early_stop = True
                self.stop_reason = self.stop_reason or "stopped on another rank"
            if self.early_stop or (stop_at and self.iteration >= stop_at):
                break
        if n == 0:
            raise LoopConfigError(
                f"train_loader yielded no batches in epoch {self.epoch}; it must yield at least one batch per epoch"
            )
        if n % accum:
            self._optimizer_step()  # the epoch's last, partial accumulation
        self._epoch_complete = True
        self._epoch_batches = n
        total = loss_sum_host if loss_sum_dev is None else float(loss_sum_dev.item())
        return total / n

    def _epoch_start(self) -> tuple[Iterable[Any], int, float, torch.Tensor | None]:
        """The epoch's loader and its loss accumulators: fresh, or continued from a mid-epoch checkpoint."""
        self._epoch_complete = False
        self.batch_in_epoch = 0
        plan, self._resume_plan = self._resume_plan, None
        loader: Iterable[Any] = self._run_loader("train_loader", self.train_loader)
        if self.distributed is not None:
            _distributed.set_epoch(loader, self.epoch)
        skip, loss_sum = 0, 0.0
        if plan is not None and plan["batch_in_epoch"] > 0:
            skip, loss_sum = plan["batch_in_epoch"], plan["epoch_loss_sum"]
            resume_rng = torch.get_rng_state()  # the checkpoint's state, restored by the caller
            restore_epoch_rng(loader, plan["epoch_start_rng"])
            self._epoch_start_rng = plan["epoch_start_rng"]
            loader = skip_batches(loader, skip, lambda: torch.set_rng_state(resume_rng))
            self.batch_in_epoch = skip
        else:
            pending, self._data_rng_pending = self._data_rng_pending, None
            if pending is not None:  # an epoch-end checkpoint: the loader's own generators continue from it
                restore_data_rng(loader, pending)
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
            "sampler_seed": self._sampler_seed,
            "data_rng": None if batch else capture_data_rng(self._run_loader("train_loader", self.train_loader)),
            "data_layout": data_layout(self.train_loader),
            "optimizers": [type(opt).__qualname__ for opt in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any], *, strict: bool = True) -> None:
        """Restore what :meth:`state_dict` returned; the next :meth:`fit` continues from that position.

        Args:
            state: what :meth:`state_dict` returned.
            strict: refuse (with :class:`~aitoolbox.loop.errors.ResumeMismatchError`, when ``fit`` starts) to
                continue an epoch in its middle when the training loader's batch size, dataset length, sampler or
                ``grad_accumulation`` differ from the saved run's: the skipped batches would not be the consumed
                ones. ``False`` accepts it with a warning.

        What a resume cannot reproduce (a custom sampler without ``state_dict``, random draws in DataLoader workers
        for the rest of an interrupted epoch...) is logged as a warning here, before training.

        .. versionchanged:: 0.2
            Restores the training loader's own generators; ``strict``.
        """
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.train_history.load_state_dict(state["history"])
        if state.get("grad_scaler") is not None:
            if self.grad_scaler is None:
                raise LoopConfigError("the checkpoint holds GradScaler state but use_amp does not use fp16 here")
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self._resume_plan = dict(state) if state["batch_in_epoch"] else None
        ranks = state.get("epoch_loss_sum_ranks")  # a distributed checkpoint: each rank's own partial epoch loss
        ctx = self.distributed
        if self._resume_plan is not None and ranks and ctx is not None and len(ranks) == ctx.world_size:
            self._resume_plan["epoch_loss_sum"] = float(ranks[ctx.rank])
        self._data_rng_pending = state.get("data_rng")
        self._resume_strict = strict
        problems = not_replayed(self.train_loader, mid_epoch=bool(state["batch_in_epoch"]))
        if problems and self.is_main_process:
            logger.warning("the resumed run may differ from the interrupted one: %s", "; ".join(problems))
        if "sampler_seed" in state and state["sampler_seed"] != self._sampler_seed:
            self._sampler_seed = int(state["sampler_seed"])  # the interrupted run's shuffling
            self._run_loaders.clear()
        self.batch_in_epoch = int(state["batch_in_epoch"])
        # at an epoch boundary the loop stands where fit leaves it: epoch is the last complete epoch's index
        self._epoch_complete = self.batch_in_epoch == 0 and self.epoch > 0
        if self._epoch_complete:
            self.epoch -= 1
        self.total_iteration_idx = self.iteration - 1

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

    def _eval_key(self, name: str) -> str:
        """The cache key of the loader evaluation iterates: in distributed runs the training set is evaluated
        through its own copy, sharded for evaluation (strided, no padding), not through the training shards."""
        return "train_loader:eval" if name == "train_loader" and self.distributed is not None else name

    def _loader(self, name: str) -> Iterable[Any]:
        loader = getattr(self, name)
        if loader is None:
            raise LoopConfigError(f"{name} is None; pass it to the TrainLoop constructor to evaluate on it")
        return self._run_loader(self._eval_key(name), loader)

    def _run_loader(self, name: str, loader: Iterable[Any]) -> Iterable[Any]:
        """The loader the loop iterates for the user's ``loader``: derived once (and again if it is replaced)."""
        cached = self._run_loaders.get(name)
        if cached is not None and cached[0] is loader:
            return cached[1]  # type: ignore[no-any-return]
        self._sharded_eval.discard(name)
        derived = self._derive_loader(name, loader)
        self._run_loaders[name] = (loader, derived)
        return derived

    def _derive_loader(self, name: str, loader: Iterable[Any]) -> Iterable[Any]:
        """What the loop adds to a user's loader: sharding in distributed runs, then fast collation."""
        ctx = self.distributed
        if ctx is not None:
            if name == "train_loader":
                loader = _distributed.shard_train_loader(loader, ctx, self._sampler_seed)
            else:
                sharded = _distributed.shard_eval_loader(loader, ctx)
                if sharded is None:
                    logger.debug("%s cannot be sharded: every rank evaluates all of it", name)
                else:
                    loader = sharded
                    self._sharded_eval.add(name)
        return with_fast_collate(loader) if self.fast_collate else loader

    def _evaluate(self, name: str) -> float:
        self._ensure_distributed()
        loader = self._loader(name)
        total, count = evaluate_loss_sum(self._tt, loader, self.criterion, self.device, self.amp)
        if self._eval_key(name) in self._sharded_eval and self.distributed is not None:
            total, count = self.distributed.sum([total, count])
        if not count:
            raise LoopConfigError(
                f"{name} yielded no batches, so its loss is undefined; give it at least one batch (check the "
                "dataset size, and batch_size <= len(dataset) with drop_last=True), or pass None"
            )
        return total / count

    def _predict(self, name: str) -> tuple[Any, Any, dict[str, Any] | None]:
        self._ensure_distributed()
        loader = self._loader(name)
        out = predict(self._tt, loader, self.device, self.amp)
        if self._eval_key(name) in self._sharded_eval and self.distributed is not None:
            out = _distributed.gather_predictions(self.distributed, out, len(getattr(self, name).dataset))
        return out

    def evaluate_loss_on_train_set(self) -> float:
        """Loss over the whole training set, weighted by batch size, in eval mode (global RNG untouched).

        In distributed runs each rank evaluates its share (no sample twice) and the sums are reduced.
        """
        return self._evaluate("train_loader")

    def evaluate_loss_on_validation_set(self) -> float:
        """Loss over the validation set, weighted by batch size, in eval mode (global RNG untouched)."""
        return self._evaluate("validation_loader")

    def evaluate_loss_on_test_set(self) -> float:
        """Loss over the test set, weighted by batch size, in eval mode (global RNG untouched)."""
        return self._evaluate("test_loader")

    def predict_on_train_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the training set, concatenated on the CPU.

        In distributed runs every rank predicts its share and gets the whole set back, in dataset order.
        """
        return self._predict("train_loader")

    def predict_on_validation_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the validation set, concatenated on the CPU."""
        return self._predict("validation_loader")

    def predict_on_test_set(self) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the test set, concatenated on the CPU."""
        return self._predict("test_loader")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, device={self.device}, "
            f"epoch={self.epoch}, iteration={self.iteration})"
        )
