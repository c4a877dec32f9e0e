"""The training run of one ``fit`` (callbacks registered, epochs until a limit or a stop) and its hot path: one
training epoch, with every per-step decision (device move, autocast, gradient scaling, DDP
gradient sync, cross-rank stop agreement) bound once before the first batch."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch

from aitoolbox.loop._checks import len_or_none
from aitoolbox.loop._device import CudaPrefetcher, move_to_device
from aitoolbox.loop._evaluation import check_loss
from aitoolbox.loop._loaders import RunLoaders
from aitoolbox.loop._resume import (
    capture_epoch_rng,
    check_resume_plan,
    data_layout,
    restore_data_rng,
    restore_epoch_rng,
    skip_batches,
)
from aitoolbox.loop._stop import StopPoint, preempted_after_training
from aitoolbox.loop.callbacks._dispatch import CallbackHandler
from aitoolbox.loop.callbacks.base import LoopView
from aitoolbox.loop.callbacks.progress_bar import ProgressBar
from aitoolbox.loop.callbacks.progress_log import ProgressLog, is_terminal, visible_progress
from aitoolbox.loop.compiling import Compiler
from aitoolbox.loop.elastic import DataOrderLog, elastic_sampler
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.extensions import FitRun
from aitoolbox.loop.multi_loss import MultiLoss, backward_multi
from aitoolbox.loop.preemption import PreemptionWatch
from aitoolbox.loop.state import LoopState

__all__ = ["Engine", "EpochRunner", "progress_session", "train"]

logger = logging.getLogger(__name__)

_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_after_gradient_update", "on_after_optimizer_step")


class Engine(LoopView, Protocol):
    """What a fit needs of the TrainLoop beyond the :class:`~aitoolbox.loop.LoopView` (a protocol: this module does
    not import the TrainLoop)."""

    callback_handler: CallbackHandler
    prefetch: bool
    preemption_watch: PreemptionWatch | None
    progress_bar: bool | None
    print_callbacks: bool
    loaders: RunLoaders
    compiler: Compiler | None


class EpochRunner:
    """Trains epochs of one ``fit``; built when training starts, dropped when it ends."""

    def __init__(self, loop: Engine, wrapped: torch.nn.Module | None) -> None:
        self.loop = loop
        self.state: LoopState = loop.state
        by_hook, calls = loop.callback_handler.by_hook, loop.callback_handler.calls
        self.cb_begin, self.cb_end = calls["on_batch_begin"], calls["on_batch_end"]
        self.cb_grad, self.cb_step = calls["on_after_gradient_update"], calls["on_after_optimizer_step"]
        device, amp = loop.device, loop.amp
        self.device = device
        # DDP: the forward that arms the gradient all-reduce; else the model's get_loss, with autocast if asked
        get_loss: Callable[..., torch.Tensor] = loop.tt_model.get_loss if wrapped is None else wrapped
        self.forward = get_loss
        if amp.enabled:
            autocast = torch.autocast(device_type=device.type, dtype=amp.dtype)

            def forward(batch: Any, criterion: Any, device: torch.device) -> torch.Tensor:
                with autocast:
                    return get_loss(batch, criterion, device)

            self.forward = forward
        scaler = loop.grad_scaler
        self.backward: Callable[[torch.Tensor], Any] = (
            torch.Tensor.backward if scaler is None else lambda loss: scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        )
        accum = self.state.grad_accumulation
        self.no_sync = loop.strategy.sync_off() if accum > 1 else None
        runtime = loop.runtime
        stoppers = sorted({cb.callback_name for h in _BATCH_HOOKS for cb in by_hook[h] if cb.stops_mid_epoch})
        needs_agreement = runtime.distributed and bool(stoppers)
        if needs_agreement:
            logger.debug(
                "ranks agree to stop after every batch (one gloo all-reduce), for %s: their batch hooks "
                "may stop mid-epoch (stops_mid_epoch=True)",
                stoppers,
            )
        self.agree_stop: Callable[[bool], bool] | None = runtime.any if needs_agreement else None
        self.stop_point = StopPoint.build(loop.preemption_watch, runtime, self.state)
        self.params: list[list[torch.Tensor]] = []  # each optimizer's trainable parameters, for a MultiLoss
        self.prefetch = device.type == "cuda" and loop.prefetch
        self.move = None if device.type == "cpu" or self.prefetch else move_to_device
        self.order: DataOrderLog | None = None  # set per epoch: the data-order log of an ElasticSampler
        self.compiled_steps = loop.compiler.steps if loop.compiler is not None else None

    def start(self, loader: Iterable[Any]) -> tuple[Iterable[Any], int]:
        """The epoch's loader and the batches already done in it: fresh, or continued from a mid-epoch checkpoint."""
        state = self.state
        plan, state.resume_plan = state.resume_plan, None
        self.loop.runtime.set_epoch(loader, state.epoch)
        elastic = elastic_sampler(loader)
        if elastic is not None:
            elastic.set_epoch(state.epoch)
        skip, loss_sum = 0, 0.0
        if plan is not None and plan["batch_in_epoch"] > 0:
            skip, loss_sum = plan["batch_in_epoch"], plan["epoch_loss_sum"]
            resume_rng = torch.get_rng_state()  # the checkpoint's state, restored by the caller
            restore_epoch_rng(loader, plan["epoch_start_rng"])
            state.epoch_start_rng = plan["epoch_start_rng"]
            loader = skip_batches(loader, skip, lambda: torch.set_rng_state(resume_rng))
        else:
            pending, state.data_rng_pending = state.data_rng_pending, None
            if pending is not None:  # an epoch-end checkpoint: the loader's own generators continue from it
                restore_data_rng(loader, pending)
            state.epoch_start_rng = capture_epoch_rng(loader)
        state.begin_epoch(skip, loss_sum, self.device)
        self.order = None
        if elastic is not None and elastic.log_order:  # skip is whole optimizer steps (checked by the resume)
            state.order_log.begin_epoch(elastic, skip // state.grad_accumulation)
            self.order = state.order_log
        if self.prefetch:
            loader = CudaPrefetcher(loader, self.device)
        return loader, skip

    def run(self, loader: Iterable[Any]) -> float:
        """One pass over the training loader; the sum of the batch losses (one host read at the end)."""
        state, loop = self.state, self.loop
        loader, n = self.start(loader)
        criterion, device, move, forward, backward = loop.criterion, self.device, self.move, self.forward, self.backward
        cb_begin, cb_end, no_sync, agree_stop = self.cb_begin, self.cb_end, self.no_sync, self.agree_stop
        stop_point = self.stop_point
        accum, stop_at = state.grad_accumulation, state.num_iterations
        loss_dev, loss_host = state.loss_sum_dev, state.loss_sum_host
        remaining = len_or_none(loader)
        last = None if remaining is None else n + remaining  # the epoch's batch count (resumed ones included)
        state.epoch_length = last
        synced = contextlib.nullcontext()  # reusable: nothing is allocated per step
        unchecked = True  # the first loss of the epoch is checked (one branch per step, no sync)
        multi = False  # get_loss returns a MultiLoss (one branch per step)
        for batch in loader:
            state.total_iteration_idx = state.iteration
            for call in cb_begin:
                call()
            if move is not None:
                batch = move(batch, device)
            # DDP: between optimizer steps, skip the gradient all-reduce (it runs on the step's last micro-batch)
            local = no_sync is not None and (n + 1) % accum != 0 and (last is None or n + 1 < last)
            with no_sync() if local else synced:  # type: ignore[misc]  # both context managers
                loss = forward(batch, criterion, device)
                if unchecked:
                    multi = self.check_first_loss(loss)
                    unchecked = False
                if multi:
                    backward_multi(loss, self.params, accum, loop.grad_scaler)  # type: ignore[arg-type]
                    loss = loss.total()  # type: ignore[attr-defined]
                else:
                    backward(loss if accum == 1 else loss / accum)
                state.last_loss = loss
            if loss_dev is None:
                loss_host += loss.item()  # free on CPU: no device to wait for
                state.loss_sum_host = loss_host
            else:
                loss_dev += loss.detach()
            n += 1
            state.batch_in_epoch = n
            if n % accum == 0:
                self.optimizer_step()
            state.iteration += 1
            for call in cb_end:
                call()
            if stop_point is not None and stop_point(state.iteration, n % accum == 0):
                raise stop_point.preempted()  # at an optimizer-step boundary, before the epoch's end
            if agree_stop is not None and agree_stop(state.early_stop):
                state.request_stop("stopped on another rank")
            if state.early_stop or (stop_at and state.iteration >= stop_at):
                break
        return self.finish(n)

    def check_first_loss(self, loss: Any) -> bool:
        """Check the epoch's first loss; True for a :class:`~aitoolbox.loop.multi_loss.MultiLoss`."""
        loop, grad = self.loop, torch.is_grad_enabled()
        if not isinstance(loss, MultiLoss):
            check_loss(loop.tt_model, "get_loss", loss, needs_grad=grad)
            return False
        if loop.runtime.distributed:
            raise LoopConfigError(
                "MultiLoss is not supported in distributed training yet (DDP reduces gradients once per backward); "
                "train it in one process, or return one loss (e.g. their sum) from get_loss"
            )
        for name, value in loss.items():
            check_loss(loop.tt_model, f"get_loss()[{name!r}]", value, needs_grad=grad)
        self.params = [[p for g in opt.param_groups for p in g["params"] if p.requires_grad] for opt in loop.optimizers]
        return True

    def finish(self, n: int) -> float:
        if n == 0:
            raise LoopConfigError(
                f"train_loader yielded no batches in epoch {self.state.epoch}; it must yield at least one batch per "
                "epoch"
            )
        if n % self.state.grad_accumulation:
            self.optimizer_step()  # the epoch's last, partial accumulation
        return self.state.end_epoch(n)

    def optimizer_step(self) -> None:
        loop = self.loop
        scaler, steps = loop.grad_scaler, self.compiled_steps
        for idx, opt in enumerate(loop.optimizers):
            if self.cb_grad:
                if scaler is not None:
                    scaler.unscale_(opt)
                for call in self.cb_grad:
                    call(idx)
            if scaler is None:
                opt.step() if steps is None else steps[idx]()
            else:
                scaler.step(opt)
        if scaler is not None:
            scaler.update()
        for call in self.cb_step:
            call()
        for opt in loop.optimizers:
            opt.zero_grad(set_to_none=True)
        if self.order is not None:
            self.order.step(self.state.last_loss)  # type: ignore[arg-type]  # set by the step's last micro-batch


@contextlib.contextmanager
def progress_session(loop: Engine, run: FitRun) -> Iterator[None]:
    """The whole of one ``fit`` (the extensions' work included): when progress goes to log lines (no terminal, or a
    :class:`ProgressLog` given), the loop's INFO lines are visible on stderr if the program configured no logging."""
    given = [cb for cb in run.callbacks if isinstance(cb, ProgressBar | ProgressLog)]
    logged = isinstance(given[0] if given else _progress_display(loop), ProgressLog) and loop.is_main_process
    with visible_progress() if logged else contextlib.nullcontext():
        yield


def train(loop: Engine, run: FitRun) -> None:
    """Train ``loop`` (a TrainLoop) for ``run``: register the callbacks, then epochs until a limit or a stop."""
    state: LoopState = loop.state
    if state.resumed and loop.is_main_process:
        target = f"epoch {run.num_epochs}" if run.num_epochs else f"iteration {run.num_iterations}"
        done = f"{state.epochs_done} epochs, {state.iteration} iterations"
        logger.info(
            "resumed after %s: training up to %s (after a resume, num_epochs counts from the start)", done, target
        )
    state.begin_fit(run.num_epochs, run.num_iterations, run.grad_accumulation)
    loop.loaders.set_accumulation(run.grad_accumulation)
    loop.loaders.train(loop.train_loader)  # derived now: a global batch the ranks cannot split is refused here
    if state.resume_plan is not None:
        check_resume_plan(
            state, data_layout(loop.train_loader), loop.runtime.world_size, elastic_sampler(loop.train_loader)
        )
    handler = _register_callbacks(loop, run)
    local_rank = getattr(loop.runtime, "local_rank", None)  # set in a distributed run
    for ext in loop.extensions:
        ext.on_fit_start(loop)
    compiler = loop.compiler
    if compiler is not None:  # once, before the runner binds get_loss: in place, after the strategy wrapped
        compiler.apply(loop.tt_model, loop.optimizers, loop.grad_scaler)
    runner = EpochRunner(loop, loop.strategy.wrapped)
    log = logger.info if loop.is_main_process else logger.debug
    loop.tt_model.train()
    if local_rank is not None:
        handler.call("on_multiprocess_start")
    handler.call("on_train_begin")
    start = time.perf_counter()
    while not state.done():
        state.next_epoch()
        handler.call("on_epoch_begin")
        epoch_start = time.perf_counter()
        loss_sum = runner.run(loop.loaders.train(loop.train_loader))
        total, batches = loop.runtime.sum([loss_sum, state.epoch_batches])  # the mean over every rank's batches
        mean = total / batches
        _epoch_end(loop, mean)
        handler.call("on_epoch_end")
        of = f"/{state.num_epochs}" if state.num_epochs else ""
        log(
            "epoch %d%s: loss %.4f%s (%.2f s)",
            state.epoch + 1,
            of,
            mean,
            _metrics(loop),
            time.perf_counter() - epoch_start,
        )
        if state.messages is not None:
            state.messages.end_of_epoch_trigger()
        if runner.stop_point is not None:
            runner.stop_point.publish()
        # every rank takes part in the vote; another rank's stop stops this one now, without its own reason
        if loop.runtime.any(state.early_stop) and not state.early_stop:
            state.request_stop("stopped on another rank")
    preempted = preempted_after_training(loop, runner.stop_point)
    if preempted is not None:
        raise preempted
    handler.call("on_train_end")
    took = time.perf_counter() - start
    why = f" (stopped: {state.stop_reason})" if state.stop_reason else ""
    why += "" if compiler is None else f"; torch.compile: {compiler.fit_graphs} graph(s) compiled (compiled_graphs)"
    log("training finished: %d epochs, %d iterations in %.1f s%s", state.epochs_done, state.iteration, took, why)


def _register_callbacks(loop: Engine, run: FitRun) -> CallbackHandler:
    """The run's callbacks (with the progress display), registered; the handler that calls their hooks."""
    loop.callbacks = run.callbacks
    display = _progress_display(loop)
    if display is not None and not any(isinstance(cb, ProgressBar | ProgressLog) for cb in loop.callbacks):
        loop.callbacks.append(display)
    for cb in loop.callbacks:
        cb.register_train_loop_object(loop)
    if loop.print_callbacks:
        logger.info("callbacks: %s", [cb.callback_name for cb in loop.callbacks])
    handler = CallbackHandler(loop.callbacks, getattr(loop.runtime, "local_rank", None), loop.state)
    loop.callback_handler = handler
    return handler


def _epoch_end(loop: Engine, mean_loss: float) -> None:
    """The epoch's history: ``loss`` and, when due (``end_auto_eval``), ``val_loss``."""
    loop.train_history.insert_single_result_into_history("loss", mean_loss)
    if not math.isfinite(mean_loss) and loop.is_main_process:
        logger.warning(
            "epoch %d: the training loss is %s; add TerminateOnNaN() to stop at the first bad iteration",
            loop.epoch,
            mean_loss,
        )
    auto = loop.end_auto_eval
    if loop.validation_loader is not None and (auto if isinstance(auto, bool) else loop.epoch % auto == 0):
        loop.train_history.insert_single_result_into_history("val_loss", loop.evaluate_loss_on_validation_set())
    if loop.compiler is not None:  # the epoch's new graphs, its evaluation's included
        loop.train_history.insert_single_result_into_history("compiled_graphs", loop.compiler.new_graphs())


def _metrics(loop: Engine) -> str:
    """The epoch's numbers other than ``loss`` (what the bar shows at its end): ``, val_loss 0.4132, ...``."""
    history, epoch = loop.train_history, loop.epoch
    epochs = history.epochs()
    shown = []
    for name, values in history.items():
        last = values[-1] if values else None
        if name != "loss" and epochs[name][-1:] == [epoch] and isinstance(last, int | float) and last is not True:
            shown.append(f", {name} {last}" if isinstance(last, int) else f", {name} {last:.4f}")
    return "".join(shown)


def _progress_display(loop: Engine) -> ProgressBar | ProgressLog | None:
    """``progress_bar=None``: a bar on a terminal, log lines elsewhere; ``True``: a bar; ``False``: nothing. Only the
    main process shows progress."""
    if not loop.is_main_process or loop.progress_bar is False:
        return None
    return ProgressBar() if loop.progress_bar or is_terminal() else ProgressLog()
