"""The TrainLoop's argument checks: each refuses bad input before training, saying what to change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from aitoolbox.loop.callbacks.base import Callback
from aitoolbox.loop.errors import LoopConfigError, check_int
from aitoolbox.loop.model import ModelWrap, TTModel
from aitoolbox.loop.multi_loss import MultiOptimizer

__all__ = [
    "check_extensions",
    "check_fit_args",
    "check_loaders",
    "check_optimizers",
    "check_options",
    "len_or_none",
    "refuse_empty",
]


def _is_loader(obj: object) -> bool:
    return hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, Callback))


def len_or_none(loader: object) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def refuse_empty(name: str, loader: object, fix: str = "") -> None:
    """A loader whose ``len`` is 0 is refused before training (iterable-style loaders are checked when they run)."""
    if len_or_none(loader) == 0:
        raise LoopConfigError(
            f"{name} is empty (0 batches); check the dataset size and that batch_size <= len(dataset) when "
            f"drop_last=True{fix}"
        )


def check_loaders(train_loader: object, validation_loader: object, test_loader: object) -> None:
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
            refuse_empty(name, loader, ", or pass None")


def check_optimizers(optimizer: object, tt: TTModel) -> list[torch.optim.Optimizer]:
    """The optimizer (or list of them) as a list, each holding some of the model's parameters."""
    if isinstance(optimizer, MultiOptimizer):
        optimizer = optimizer.optimizer_list
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
    checked: list[torch.optim.Optimizer] = opts  # type: ignore[assignment]
    model_params = {id(p) for p in tt.parameters()}
    owner: dict[int, int] = {}  # parameter -> the optimizer that steps it
    for i, opt in enumerate(checked):
        opt_params = [p for group in opt.param_groups for p in group["params"]]
        for p in opt_params:
            if owner.setdefault(id(p), i) != i:
                same = checked[owner[id(p)]] is opt
                raise LoopConfigError(
                    f"optimizer {i} {'is optimizer ' if same else 'steps parameters of optimizer '}{owner[id(p)]}, "
                    "so those parameters would be updated twice per step; give each optimizer once, over its own "
                    "parameters"
                )
        if opt_params and not any(id(p) in model_params for p in opt_params):
            raise LoopConfigError(
                f"optimizer {i} holds none of the model's parameters; create it after the model, "
                "from this model's parameters: optim.Adam(model.parameters(), ...)"
            )
    return checked


def check_criterion(criterion: object, tt: TTModel, model: object) -> None:
    if isinstance(criterion, type):
        raise LoopConfigError(
            f"criterion is the class {criterion.__name__}, not a loss function; pass an instance: "
            f"{criterion.__name__}()"
        )
    if criterion is not None and not callable(criterion):
        raise LoopConfigError(
            f"criterion must be callable (e.g. nn.CrossEntropyLoss()), got {type(criterion).__name__}"
        )
    if criterion is None and isinstance(tt, ModelWrap) and tt.batch_model_feed_def is None:
        raise LoopConfigError(
            f"criterion is None but {type(model).__name__} is a plain nn.Module whose loss is "
            "criterion(output, target); pass a loss function such as nn.CrossEntropyLoss()"
        )


def check_options(
    *,
    gpu_mode: object,
    num_processes: object,
    ddp_options: object,
    progress_bar: object,
    prefetch: object,
    end_auto_eval: object,
) -> None:
    if gpu_mode == "dp":
        raise LoopConfigError(
            "gpu_mode='dp' (torch.nn.DataParallel) is not supported: DistributedDataParallel is faster even on one "
            "machine; use gpu_mode='ddp' (every GPU of this machine from a plain `python` run) or launch with torchrun"
        )
    if gpu_mode not in ("single", "ddp"):
        raise LoopConfigError(
            f"gpu_mode must be 'single' or 'ddp', got {gpu_mode!r} (for several GPUs launch with torchrun, "
            "or use gpu_mode='ddp')"
        )
    if num_processes is not None:
        check_int("num_processes", num_processes, 1)
    if ddp_options is not None and not isinstance(ddp_options, dict):
        raise LoopConfigError(f"ddp_options must be a dict of DistributedDataParallel arguments, got {ddp_options!r}")
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise LoopConfigError(f"progress_bar must be True, False or None, got {progress_bar!r}")
    if not isinstance(prefetch, bool):
        raise LoopConfigError(f"prefetch must be True or False, got {prefetch!r}")
    if not (isinstance(end_auto_eval, bool) or (isinstance(end_auto_eval, int) and end_auto_eval >= 1)):
        raise LoopConfigError(
            f"end_auto_eval must be True, False or an int N >= 1 (every N epochs), got {end_auto_eval!r}"
        )


def check_fit_args(
    num_epochs: object, num_iterations: object, grad_accumulation: object, train_loader: Iterable[Any]
) -> None:
    check_int("num_epochs", num_epochs, 0)
    check_int("num_iterations", num_iterations, 0)
    if bool(num_epochs) == bool(num_iterations):
        raise LoopConfigError(
            "give exactly one of num_epochs and num_iterations as a positive int, "
            f"got num_epochs={num_epochs!r}, num_iterations={num_iterations!r}"
        )
    check_int("grad_accumulation", grad_accumulation, 1, expected="a positive int")
    refuse_empty("train_loader", train_loader)


def check_extensions(extensions: object) -> list[Any]:
    """The extensions as a list of :class:`~aitoolbox.loop.extensions.LoopExtension` instances."""
    from aitoolbox.loop.extensions import LoopExtension

    items = list(extensions) if isinstance(extensions, (list, tuple)) else [extensions]
    for i, ext in enumerate(items):
        if not isinstance(ext, LoopExtension):
            hint = "; callbacks go to fit(callbacks=[...])" if isinstance(ext, Callback) else ""
            raise LoopConfigError(
                f"extensions[{i}] is {type(ext).__name__}, not a LoopExtension (aitoolbox.loop.extensions){hint}"
            )
    return items
