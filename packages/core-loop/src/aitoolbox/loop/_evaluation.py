"""Evaluation passes: batch-size weighted loss and concatenated predictions, without touching the global RNG."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from aitoolbox.loop._batch import infer_batch_size, is_array
from aitoolbox.loop._device import move_to_device
from aitoolbox.loop._distributed import start_rank
from aitoolbox.loop.amp import AmpConfig
from aitoolbox.loop.errors import LoopConfigError
from aitoolbox.loop.model import TTModel
from aitoolbox.loop.multi_loss import MultiLoss

__all__ = [
    "EvaluationAPI",
    "check_loss",
    "evaluate_loss_sum",
    "evaluate_named",
    "infer_batch_size",
    "predict",
    "predict_named",
    "preserve_rng",
]


def check_loss(model: object, method: str, loss: object, *, needs_grad: bool) -> None:
    """Refuse, naming ``method`` and the fix, a loss that is not a one-element tensor (requiring grad in training)."""
    owner = f"{type(model).__name__}.{method}"
    if not isinstance(loss, torch.Tensor):
        hint = " (was .item() called on it?)" if isinstance(loss, (int, float)) else ""
        raise LoopConfigError(
            f"{owner} must return the batch's loss as a scalar torch.Tensor, got {type(loss).__name__}{hint}; "
            "return e.g. criterion(self(x), y)"
        )
    if loss.numel() != 1:
        raise LoopConfigError(
            f"{owner} returned a loss tensor of shape {tuple(loss.shape)}, not a scalar; reduce it (loss.mean(), or a "
            "criterion with reduction='mean')"
        )
    if needs_grad and not loss.requires_grad:
        raise LoopConfigError(
            f"{owner} returned a loss that does not require grad, so nothing would be trained; do not .detach() it or "
            "compute it under torch.no_grad(), and check that the model's parameters require grad"
        )


def _check_predictions(model: object, out: object) -> tuple[Any, Any, Any]:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise LoopConfigError(
            f"{type(model).__name__}.get_predictions must return (y_pred, y_true, metadata), got {got}; return "
            "metadata=None when there is none"
        )
    if out[2] is not None and not isinstance(out[2], Mapping):
        raise LoopConfigError(
            f"{type(model).__name__}.get_predictions returned metadata of type {type(out[2]).__name__}; return a "
            "dict of per-sample values, or None"
        )
    return out[0], out[1], out[2]


@contextlib.contextmanager
def preserve_rng(device: torch.device) -> Iterator[None]:
    """Restore the Python, NumPy and torch (CPU and ``device``) RNG states on exit.

    Creating a DataLoader iterator draws a seed from torch's global generator, and datasets may use ``random`` or
    NumPy in their transforms; evaluation must not shift the training run's random stream.
    """
    py_state = random.getstate()
    np_random: Any = None
    try:
        import numpy.random as np_random  # torch needs numpy only optionally
    except ImportError:
        pass
    np_state = np_random.get_state() if np_random is not None else None
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np_random is not None:
            np_random.set_state(np_state)
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def _autocast(amp: AmpConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if amp.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp.dtype)


def evaluate_loss_sum(
    model: TTModel,
    loader: Iterable[Any],
    criterion: Callable[..., torch.Tensor] | None,
    device: torch.device,
    amp: AmpConfig,
) -> tuple[float, int]:
    """``(sum of batch loss x batch size, number of samples)`` over ``loader`` (reducible across ranks)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        with preserve_rng(device), torch.no_grad(), _autocast(amp, device):
            for batch in loader:
                batch = move_to_device(batch, device)
                n = infer_batch_size(batch)
                loss = model.get_loss_eval(batch, criterion, device)
                if isinstance(loss, MultiLoss):
                    loss = loss.total()
                if not count:
                    check_loss(model, "get_loss_eval", loss, needs_grad=False)
                total += loss.detach().to(torch.float64) * n
                count += n
    finally:
        model.train(was_training)
    return float(total.item()), count


def _to_host(x: Any) -> Any:
    """``x`` on the CPU, owning its memory: a view into a larger CPU storage (a slice of the batch, or one output of
    a batch packed into one shared segment by a fastcollate worker) is copied, so that keeping the predictions
    until the end of the pass does not keep every batch's storage alive."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", non_blocking=False)
        if x.layout is torch.strided and x.untyped_storage().nbytes() > x.nbytes:
            x = x.clone()
    return x


def _concat(parts: list[Any]) -> Any:
    if not parts:
        return None
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([p.reshape(1) if p.dim() == 0 else p for p in parts])
    if is_array(first):
        import numpy as np

        return np.concatenate([np.atleast_1d(p) for p in parts])
    out: list[Any] = []
    for p in parts:
        if isinstance(p, (list, tuple)):
            out.extend(p)
        else:
            out.append(p)
    return out


def predict(
    model: TTModel,
    loader: Iterable[Any],
    device: torch.device,
    amp: AmpConfig,
    on_batch: Callable[[Any, Any, Any], None] | None = None,
    collate: Callable[[Any, list[Any]], list[Any]] | None = None,
    transform: Callable[[list[Any]], Any] | None = None,
) -> tuple[Any, Any, dict[str, Any] | None]:
    """Run ``model.get_predictions`` over ``loader`` and concatenate ``(y_pred, y_true, metadata)`` on the CPU;
    ``on_batch(y_pred, y_true, metadata)`` sees each batch's outputs first. ``collate(batch, list) -> list`` and
    ``transform(list)`` replace the append and the concatenation (the original's ``collate_batch_pred_fn`` and
    ``pred_transform_fn``)."""
    was_training = model.training
    model.eval()
    preds: list[Any] = []
    trues: list[Any] = []
    meta: dict[str, list[Any]] | None = None
    try:
        with preserve_rng(device), torch.no_grad(), _autocast(amp, device):
            for batch in loader:
                batch = move_to_device(batch, device)
                out = model.get_predictions(batch, device)
                y_pred, y_true, metadata = out if preds else _check_predictions(model, out)
                if on_batch is not None:
                    on_batch(y_pred, y_true, metadata)
                if collate is None:
                    preds.append(_to_host(y_pred))
                    trues.append(_to_host(y_true))
                else:
                    preds, trues = collate(_to_host(y_pred), preds), collate(_to_host(y_true), trues)
                if metadata is not None:
                    meta = {} if meta is None else meta
                    for k, v in metadata.items():
                        meta.setdefault(k, []).append(_to_host(v))
    finally:
        model.train(was_training)
    metadata_out = None if meta is None else {k: _concat(v) for k, v in meta.items()}
    join = _concat if transform is None else transform
    return join(preds), join(trues), metadata_out


def evaluate_named(loop: Any, name: str) -> float:
    """The batch-size weighted loss over ``loop``'s loader ``name`` (this rank's share, reduced, when sharded)."""
    start_rank(loop)
    loader, sharded = loop.loaders.evaluation(name, _given(loop, name))
    with loop.loaders.using(), loop.strategy.evaluating():
        total, count = evaluate_loss_sum(loop.tt_model, loader, loop.criterion, loop.device, loop.amp)
    if sharded:
        total, count = loop.runtime.sum([total, count])
    if not count:
        raise LoopConfigError(
            f"{name} yielded no batches, so its loss is undefined; give it at least one batch (check the "
            "dataset size, and batch_size <= len(dataset) with drop_last=True), or pass None"
        )
    return float(total / count)


_SPLIT = {"train_loader": "train", "validation_loader": "validation", "test_loader": "test"}


def predict_named(loop: Any, name: str, execute_callbacks: bool = False) -> tuple[Any, Any, dict[str, Any] | None]:
    """Predictions over ``loop``'s loader ``name``; gathered in dataset order when sharded. With
    ``execute_callbacks``, the callbacks' ``on_after_batch_prediction`` see every batch."""
    start_rank(loop)
    loader, sharded = loop.loaders.evaluation(name, _given(loop, name))
    on_batch = None
    hooked = loop.callback_handler.calls["on_after_batch_prediction"] if execute_callbacks else []
    if hooked:
        info = {"type": _SPLIT[name]}

        def on_batch(y_pred: Any, y_true: Any, metadata: Any) -> None:
            for call in hooked:
                call(y_pred, y_true, metadata, info)

    collate, transform = loop.collate_batch_pred_fn, loop.pred_transform_fn
    with loop.loaders.using(), loop.strategy.evaluating():
        out = predict(loop.tt_model, loader, loop.device, loop.amp, on_batch, collate, transform)
    if sharded:
        out = loop.runtime.gather_predictions(out, len(_given(loop, name).dataset))
    return out


def _given(loop: Any, name: str) -> Any:
    loader = getattr(loop, name)
    if loader is None:
        raise LoopConfigError(f"{name} is None; pass it to the TrainLoop constructor to evaluate on it")
    return loader


class EvaluationAPI:
    """The TrainLoop's evaluation methods (of the original AIToolbox): losses and predictions per split."""

    # ``force_prediction`` and ``float_dict_format`` are the original AIToolbox's arguments: nothing is cached here
    # (every call computes), and a loss is one float.

    def evaluate_loss_on_train_set(self, force_prediction: bool = False, float_dict_format: bool = False) -> float:
        """Loss over the training set, weighted by batch size, in eval mode (global RNG untouched); in distributed
        runs each rank evaluates its share (no sample twice) and the sums are reduced."""
        return evaluate_named(self, "train_loader")

    def evaluate_loss_on_validation_set(self, force_prediction: bool = False, float_dict_format: bool = False) -> float:
        """Loss over the validation set, weighted by batch size, in eval mode (global RNG untouched)."""
        return evaluate_named(self, "validation_loader")

    def evaluate_loss_on_test_set(self, force_prediction: bool = False, float_dict_format: bool = False) -> float:
        """Loss over the test set, weighted by batch size, in eval mode (global RNG untouched)."""
        return evaluate_named(self, "test_loader")

    def predict_on_train_set(
        self, force_prediction: bool = False, execute_callbacks: bool = False
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the training set, concatenated on the CPU; in distributed runs every
        rank predicts its share and gets the whole set back, in dataset order. ``execute_callbacks``: call the
        callbacks' ``on_after_batch_prediction`` after each batch."""
        return predict_named(self, "train_loader", execute_callbacks)

    def predict_on_validation_set(
        self, force_prediction: bool = False, execute_callbacks: bool = False
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the validation set, concatenated on the CPU."""
        return predict_named(self, "validation_loader", execute_callbacks)

    def predict_on_test_set(
        self, force_prediction: bool = False, execute_callbacks: bool = False
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        """``(y_pred, y_true, metadata)`` over the test set, concatenated on the CPU."""
        return predict_named(self, "test_loader", execute_callbacks)
