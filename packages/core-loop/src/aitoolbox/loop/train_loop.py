"""The training-loop engine: :class:`TrainLoop` (arguments, the ``fit`` template; the evaluation API is inherited).

The loop's counters are one :class:`~aitoolbox.loop.state.LoopState`; the epoch is :mod:`aitoolbox.loop._epoch`;
where it runs (one process or a rank of a distributed job) is a :class:`~aitoolbox.loop.runtime.Runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from aitoolbox.loop import _checks, _distributed
from aitoolbox.loop._device import resolve_device
from aitoolbox.loop._epoch import progress_session, train
from aitoolbox.loop._evaluation import EvaluationAPI
from aitoolbox.loop._launch import launch, will_launch
from aitoolbox.loop._loaders import RunLoaders, resolve_fast_collate
from aitoolbox.loop._original import OriginalLoopAPI, take_ddp_kwargs
from aitoolbox.loop._resume import capture_data_rng, data_layout, load_loop_state
from aitoolbox.loop._stop import on_preempted, preemption_guard
from aitoolbox.loop.amp import AmpConfig, resolve_amp
from aitoolbox.loop.callbacks._dispatch import CallbackHandler, validate_callbacks
from aitoolbox.loop.callbacks.base import CallableBool, Callback
from aitoolbox.loop.compiling import make_compiler, take_compiled_model
from aitoolbox.loop.extensions import FitRun, LoopExtension, after_fit, fit_failed, fit_options
from aitoolbox.loop.history import TrainingHistory
from aitoolbox.loop.model import TTModel, as_ttmodel
from aitoolbox.loop.preemption import Preempted, Preemption, PreemptionWatch
from aitoolbox.loop.runtime import Runtime
from aitoolbox.loop.state import LoopState, StateField
from aitoolbox.loop.strategy import DDP, Strategy, resolve_strategy

__all__ = ["TrainLoop"]


class TrainLoop(EvaluationAPI, OriginalLoopAPI):
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
        strategy: how the model is wrapped and synchronised: a :class:`~aitoolbox.loop.strategy.Strategy`
            (:class:`~aitoolbox.loop.strategy.DDP` with its options, ...) or its name, ``'single'`` or ``'ddp'``.
            ``None`` (default): from ``gpu_mode``; under ``torchrun`` DDP.
        gpu_mode: ``'single'`` or ``'ddp'`` (the original's spelling of ``strategy``). Under ``torchrun`` every
            variant trains distributed data parallel (DDP on ``cuda:LOCAL_RANK`` or gloo on CPU, the training loader
            sharded, evaluation sharded and gathered in dataset order, only rank 0 writing); ``'ddp'`` (or
            ``strategy='ddp'``) from a plain ``python`` process makes ``fit`` start ``num_processes`` workers
            (torch's elastic launcher) and return the trained model to the caller.
        num_processes: workers for ``gpu_mode='ddp'`` from a plain process (default: the number of GPUs).
        ddp_options: keyword arguments for ``DistributedDataParallel`` (e.g. ``{"find_unused_parameters": True}``):
            ``DDP(**ddp_options)``.
        use_amp: mixed precision: ``False``, ``True``, ``'bf16'`` or ``'fp16'``
            (see :func:`~aitoolbox.loop.resolve_amp`).
        end_auto_eval: compute ``val_loss`` on the validation loader at every epoch end (when there is one);
            an int ``N`` computes it every N-th epoch (0-based epochs 0, N, 2N..., as the original), ``False``
            never.
        progress_bar: ``None`` shows a one-line-per-epoch tqdm bar when stderr is a terminal;
            ``True``/``False`` force it.
        prefetch: on CUDA, copy the next batch on a side stream while the current step runs (it overlaps compute
            from pinned memory). Off by default: ``non_blocking`` moves on the current stream measured as fast as a
            hand-written loop, the side stream ~160 us per step slower on a small model. For large batches.
        fast_collate: collate with ``fastcollate.collate`` (the Rust ``default_collate``) in every given
            DataLoader that uses ``default_collate``, through shallow copies (the user's loaders are never
            modified); a batch it declines is collated by ``default_collate``. ``None`` (default): when installed.
        extensions: :class:`~aitoolbox.loop.extensions.LoopExtension` objects run around ``fit`` (the tracked
            variants are built from them).
        preemption: on SIGTERM/SIGUSR1/SIGINT stop at the next optimizer-step boundary (all ranks at the same) and
            raise :class:`~aitoolbox.loop.preemption.Preempted` (exit code 143) after the extensions saved: a
            :class:`~aitoolbox.loop.preemption.Preemption` (grace period, exit code, signals), ``True``/``False``;
            ``None``: on in the checkpointing variants, off here.
        compile: ``torch.compile`` in place (:mod:`~aitoolbox.loop.compiling`): ``True`` compiles the model with
            torch's defaults; a dict passes ``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options`` through
            and chooses the parts: ``model`` (default True), ``loss`` (``get_loss``), ``optimizer`` (the step, with
            tensor learning rates), ``blocks`` (submodule names compiled one by one). State-dict names stay the
            eager ones. A ``torch.compile(model)`` given as the model is unwrapped and compiled in place
            (``None``, the default, means ``True`` then, else off).
        collate_batch_pred_fn, pred_transform_fn: the original's prediction collation: ``collate(batch_pred, list)``
            adds one batch's ``y_pred`` (and ``y_true``) to the list, ``transform(list)`` joins them (default: CPU
            tensors concatenated). ``print_callbacks``: log the callbacks per hook when ``fit`` starts.
            ``lazy_experiment_save`` is accepted: nothing is written before ``fit`` starts anyway.

    Example:
        .. code-block:: python

            tl = TrainLoop(model, train_loader, val_loader, None, optimizer, criterion)
            model = tl.fit(num_epochs=10)
            tl.train_history["val_loss"]

    .. versionchanged:: 0.3
        ``extensions``, :meth:`request_stop`; the counters are one :class:`~aitoolbox.loop.state.LoopState`.
    """

    # The counters, read and written in :attr:`state`: ``epoch`` is the 0-based index of the epoch being trained
    # (after training, of the last one), ``iteration`` the batches done over every fit, ``total_iteration_idx`` the
    # 0-based global index of the batch being trained (-1 before the first), ``batch_in_epoch`` the batches done in
    # the epoch, ``epoch_length`` its batch count (None for a loader without a length).
    epoch, iteration, total_iteration_idx = StateField[int](), StateField[int](), StateField[int]()
    batch_in_epoch, num_epochs, num_iterations = StateField[int](), StateField[int](), StateField[int]()
    grad_accumulation, early_stop, epoch_length = StateField[int](), StateField[bool](), StateField["int | None"]()
    stop_reason, last_loss = StateField["str | None"](), StateField["torch.Tensor | None"]()
    train_history = StateField[TrainingHistory]("history")
    #: whether ``preemption=None`` means on (the checkpointing variants) or off
    preemption_default = False

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
        extensions: Sequence[LoopExtension[TrainLoop]] = (),
        preemption: Preemption | bool | None = None,
        collate_batch_pred_fn: Callable[[Any, list[Any]], list[Any]] | None = None,
        pred_transform_fn: Callable[[list[Any]], Any] | None = None,
        lazy_experiment_save: bool = False,
        print_callbacks: bool = False,
        strategy: Strategy | str | None = None,
        compile: bool | dict[str, Any] | None = None,  # the option's name in every peer library
    ) -> None:
        model, compiling = take_compiled_model(model, compile)
        self.tt_model: TTModel = as_ttmodel(model)
        self.model = model
        self.compiler = make_compiler(compiling, self.tt_model)
        _checks.check_loaders(train_loader, validation_loader, test_loader)
        self.train_loader, self.validation_loader, self.test_loader = train_loader, validation_loader, test_loader
        self.optimizers = _checks.check_optimizers(optimizer, self.tt_model)
        self.optimizer = optimizer
        _checks.check_criterion(criterion, self.tt_model, model)
        self.criterion = criterion
        _checks.check_options(
            gpu_mode=gpu_mode,
            num_processes=num_processes,
            ddp_options=ddp_options,
            progress_bar=progress_bar,
            prefetch=prefetch,
            end_auto_eval=end_auto_eval,
        )
        self.strategy: Strategy = resolve_strategy(strategy, gpu_mode, ddp_options, launched=_distributed.launched())
        self.gpu_mode = "ddp" if self.strategy.launches and strategy is not None else gpu_mode
        self.num_processes, self._ddp_options = num_processes, dict(ddp_options or {})
        self.progress_bar, self.prefetch, self.end_auto_eval = progress_bar, prefetch, end_auto_eval
        self._device_request = (device, cuda_device_idx)
        launching = will_launch(self.strategy)
        if launching:  # the workers are forked: this process must not initialise CUDA
            self.device = _distributed.parent_device(device, cuda_device_idx)
        else:
            self.device = resolve_device(_distributed.rank_device(device), cuda_device_idx)
        self.runtime: Runtime = Runtime(_distributed.launched_rank())
        self.amp: AmpConfig = resolve_amp(use_amp, self.device)
        self.use_amp = use_amp
        amp = self.amp
        self.grad_scaler = torch.amp.GradScaler(self.device.type, **amp.scaler_options) if amp.use_grad_scaler else None
        self.fast_collate = resolve_fast_collate(fast_collate)
        self.preemption = Preemption.resolve(preemption, self.preemption_default)
        self.preemption_watch: PreemptionWatch | None = None
        self.loaders = RunLoaders(self.runtime, self.fast_collate, self.preemption.signals if self.preemption else ())
        if not (launching and self.device.type == "cuda"):  # launched workers place the model themselves
            self.tt_model.to(self.device)
        self.state = LoopState()
        self.callbacks: list[Callback] = []
        self.callback_handler = CallbackHandler([])
        self.collate_batch_pred_fn, self.pred_transform_fn = collate_batch_pred_fn, pred_transform_fn
        self.lazy_experiment_save, self.print_callbacks = lazy_experiment_save, print_callbacks
        self.experiment_timestamp = time.strftime("%Y-%m-%d_%H-%M-%S")  # the original's, when the loop was made
        self.extensions: list[LoopExtension[TrainLoop]] = _checks.check_extensions(extensions)
        for ext in self.extensions:
            ext.attach(self)

    @property
    def epochs_done(self) -> int:
        """How many epochs are complete: ``epoch`` + 1 once the current epoch has ended, else ``epoch``."""
        return self.state.epochs_done

    @property
    def is_main_process(self) -> CallableBool:
        """True where this process writes checkpoints and results and logs: rank 0, or any non-distributed run
        (``tl.is_main_process()``, the original's call, works too)."""
        return CallableBool(self.runtime.is_main)

    @property
    def callbacks_by_hook(self) -> Mapping[str, Sequence[Callback]]:
        """The registered callbacks that override each hook, in the order they run (the current or last ``fit``).

        .. versionadded:: 0.7
        """
        return self.callback_handler.by_hook

    @property
    def ddp_options(self) -> dict[str, Any]:
        """The ``DistributedDataParallel`` options (the DDP strategy's, shared with it)."""
        return self.strategy.options if isinstance(self.strategy, DDP) else self._ddp_options

    @property
    def distributed(self) -> _distributed.DistributedContext | None:
        """This rank's place in a distributed run (``None`` in a single process)."""
        return self.runtime if isinstance(self.runtime, _distributed.DistributedContext) else None

    def request_stop(self, reason: str | None = None) -> None:
        """Stop training: after this batch from a batch hook, else at the end of this epoch (every rank agrees)."""
        self.state.request_stop(reason)

    def fit(
        self,
        num_epochs: int = 0,
        num_iterations: int = 0,
        callbacks: Sequence[Callback] | None = None,
        grad_accumulation: int = 1,
        **options: Any,
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

        Args:
            num_epochs: how many epochs to train (exactly one of ``num_epochs``/``num_iterations`` is given); after a
                resume (:meth:`load_state_dict`, ``resume_from``) the run's total, so a requeue runs the same call.
            num_iterations: batches, likewise; the epoch in which the count is reached is closed normally.
            callbacks: :class:`~aitoolbox.loop.callbacks.Callback` instances.
            grad_accumulation: number of batches whose gradients are summed before each optimizer step.
            **options: the keyword options the loop's extensions declare (e.g. ``resume_from``).

        Returns:
            The trained model (the object given to the constructor).

        Raises:
            LoopConfigError: invalid arguments, an empty training loader, or a callback that is not a Callback.
        """
        _checks.check_fit_args(num_epochs, num_iterations, grad_accumulation, self.train_loader)
        callbacks, options = take_ddp_kwargs(self, callbacks, options)  # the original's fit(**ddp_kwargs)
        run = FitRun(
            num_epochs, num_iterations, validate_callbacks(callbacks), grad_accumulation, fit_options(self, options)
        )
        for ext in self.extensions:
            ext.check_fit(self, run)
        if will_launch(self.strategy):
            launch(
                self,
                {
                    "num_epochs": num_epochs,
                    "num_iterations": num_iterations,
                    "callbacks": callbacks,
                    "grad_accumulation": grad_accumulation,
                    **options,
                },
            )
            return self.model
        _distributed.start_rank(self)
        with self.loaders.using():  # the loaders' shared-memory slots live until the fit's end
            self._fit(run)
        return self.model

    def _fit(self, run: FitRun) -> None:
        training = False
        with preemption_guard(self), progress_session(self, run):
            try:
                for ext in self.extensions:
                    ext.before_fit(self, run)
                training = run.train
                if training:
                    train(self, run)
            except Preempted as err:
                on_preempted(self, err)  # the extensions commit and upload; the caller gets the exit code
                raise
            except BaseException as err:
                fit_failed(self, err, training=training)
                raise
        after_fit(self)

    def state_dict(self) -> dict[str, Any]:
        """The loop's resumable state: position, history, loss accumulators, sampling RNG and GradScaler.

        Plain data and tensors only. Taken at an epoch end, the position is the start of the next epoch; taken inside
        an epoch (after an optimizer step), it is the batch reached, and :meth:`load_state_dict` makes the next
        :meth:`fit` skip the consumed batches (by sampler arithmetic) with the same sampling as the original run.
        Model, optimizer and callback states are not included: the caller saves them beside this.
        """
        return self.state.state_dict(
            lambda: capture_data_rng(self.loaders.train(self.train_loader)),
            grad_scaler=self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            data_layout=data_layout(self.train_loader),
            optimizers=[type(opt).__qualname__ for opt in self.optimizers],
            world_size=self.runtime.world_size,
        )

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
        """
        load_loop_state(self, state, strict=strict)

    def __repr__(self) -> str:
        model, name = type(self.model).__name__, type(self).__name__
        return f"{name}(model={model}, device={self.device}, epoch={self.epoch}, iteration={self.iteration})"
