"""Several losses, each training its own optimizer's parameters (GAN-style): :class:`MultiLoss`,
:class:`MultiOptimizer`.

``get_loss`` returns ``MultiLoss({"gen": g_loss, "disc": d_loss})`` and the TrainLoop gets
``MultiOptimizer([g_opt, d_opt])`` (or a list): the i-th loss (or the one ``loss_optimizer_map`` assigns) is
back-propagated into the parameters of the i-th optimizer only (``torch.autograd.backward(..., inputs=)``), every
loss before any step, then the optimizers step in order with ``on_after_gradient_update(i)`` before each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import torch

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["MultiLoss", "MultiOptimizer"]


class MultiLoss(MutableMapping[str, Any]):
    """Named losses and the optimizer each trains (the original AIToolbox class).

    Args:
        loss_dict: ``{name: scalar loss tensor}``.
        loss_optimizer_map: ``{name: optimizer index}``; default: the losses in order, optimizer 0, 1, ...
        retain_graph_until_last: keep the graph through every backward but the last (losses sharing a graph).

    Example:
        >>> import torch
        >>> loss = MultiLoss({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
        >>> loss.optimizer_index("b"), float(loss.total()), float((loss / 2)["a"])
        (1, 3.0, 0.5)
    """

    def __init__(
        self,
        loss_dict: Mapping[str, Any],
        loss_optimizer_map: Mapping[str, int] | None = None,
        retain_graph_until_last: bool = True,
    ) -> None:
        if not loss_dict:
            raise LoopConfigError("MultiLoss needs at least one loss: MultiLoss({'name': loss_tensor, ...})")
        self.loss_dict = dict(loss_dict)
        if loss_optimizer_map is not None:
            missing = sorted(set(self.loss_dict) - set(loss_optimizer_map))
            if missing:
                raise LoopConfigError(f"loss_optimizer_map has no optimizer index for the losses {missing}")
        self.loss_optimizer_map = None if loss_optimizer_map is None else dict(loss_optimizer_map)
        self.retain_graph_until_last = retain_graph_until_last
        #: backward passes left in :meth:`backward`'s count (the original's ``retain_graph`` bookkeeping)
        self.loss_backward_remaining = len(self.loss_dict)

    @property
    def optimizer_loss_map(self) -> dict[int, str]:
        """``{optimizer index: loss name}``."""
        return {self.optimizer_index(name): name for name in self.loss_dict}

    def backward(self, optimizer_idx: int, iteration: int = 0, amp_grad_scaler: Any = None) -> None:
        """The original's per-optimizer backward: the loss of optimizer ``optimizer_idx`` (scaled by the GradScaler
        when given), keeping the graph until the last loss when ``retain_graph_until_last``. The TrainLoop itself
        back-propagates each loss into its optimizer's parameters only (see the module)."""
        loss = self.loss_dict[self.optimizer_loss_map[optimizer_idx]]
        if amp_grad_scaler is not None:
            loss = amp_grad_scaler.scale(loss)
        if self.retain_graph_until_last and self.loss_backward_remaining > 1:
            loss.backward(retain_graph=True)
        else:
            loss.backward()
        self.loss_backward_remaining -= 1

    def optimizer_index(self, name: str) -> int:
        """The index of the optimizer that loss ``name`` trains."""
        if self.loss_optimizer_map is not None:
            return int(self.loss_optimizer_map[name])
        for i, key in enumerate(self.loss_dict):
            if key == name:
                return i
        raise KeyError(name)

    def total(self) -> torch.Tensor:
        """The sum of the losses (what the training history records as ``loss``)."""
        values = list(self.loss_dict.values())
        out = values[0]
        for value in values[1:]:
            out = out + value
        return out  # type: ignore[no-any-return]

    def _map(self, fn: Any) -> MultiLoss:
        out = MultiLoss(
            {k: fn(v) for k, v in self.loss_dict.items()}, self.loss_optimizer_map, self.retain_graph_until_last
        )
        out.loss_backward_remaining = self.loss_backward_remaining
        return out

    def item(self) -> MultiLoss:
        return self._map(lambda v: v.item())

    def detach(self) -> MultiLoss:
        return self._map(lambda v: v.detach())

    def cpu(self) -> MultiLoss:
        return self._map(lambda v: v.cpu())

    def to(self, *args: Any, **kwargs: Any) -> MultiLoss:
        return self._map(lambda v: v.to(*args, **kwargs))

    def __truediv__(self, divisor: float) -> MultiLoss:
        return self._map(lambda v: v / divisor)

    @property
    def device(self) -> dict[str, torch.device]:
        return {k: v.device for k, v in self.loss_dict.items()}

    def get_loss_dict(self) -> dict[str, Any]:
        return self.loss_dict

    def __getitem__(self, key: str) -> Any:
        return self.loss_dict[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.loss_dict[key] = value

    def __delitem__(self, key: str) -> None:
        del self.loss_dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.loss_dict)

    def __len__(self) -> int:
        return len(self.loss_dict)

    def __repr__(self) -> str:
        return f"MultiLoss({self.loss_dict!r})"


class MultiOptimizer:
    """Several optimizers as one (the original AIToolbox class); a plain list works the same here."""

    def __init__(self, optimizer_list: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizer_list = list(optimizer_list)

    def step(self, optimizer_idx: int, iteration: int = 0, amp_grad_scaler: Any = None) -> None:
        opt = self.optimizer_list[optimizer_idx]
        opt.step() if amp_grad_scaler is None else amp_grad_scaler.step(opt)

    def zero_grad(self, optimizer_idx: int, iteration: int = 0) -> None:
        self.optimizer_list[optimizer_idx].zero_grad()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizer_list]

    def load_state_dict(self, state_dict_list: Sequence[dict[str, Any]]) -> None:
        if not isinstance(state_dict_list, list) or len(state_dict_list) != len(self.optimizer_list):
            raise LoopConfigError(f"expected a list of {len(self.optimizer_list)} optimizer states")
        for state, opt in zip(state_dict_list, self.optimizer_list, strict=True):
            opt.load_state_dict(state)

    def __len__(self) -> int:
        return len(self.optimizer_list)

    def __getitem__(self, idx: int) -> torch.optim.Optimizer:
        return self.optimizer_list[idx]

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        return iter(self.optimizer_list)


def backward_multi(
    loss: MultiLoss, params: Sequence[Sequence[torch.Tensor]], accum: int, scaler: torch.amp.GradScaler | None
) -> None:
    """Back-propagate each loss into its optimizer's parameters only (``params[i]``: optimizer i's)."""
    names = list(loss)
    for i, name in enumerate(names):
        idx = loss.optimizer_index(name)
        if not 0 <= idx < len(params):
            raise LoopConfigError(
                f"MultiLoss {name!r} trains optimizer {idx}, but the TrainLoop has {len(params)} optimizer(s); give "
                "one optimizer per loss (MultiOptimizer([...]) or a list) or fix loss_optimizer_map"
            )
        value = loss[name] if accum == 1 else loss[name] / accum
        if scaler is not None:
            value = scaler.scale(value)
        retain = loss.retain_graph_until_last and i < len(names) - 1
        torch.autograd.backward(value, inputs=list(params[idx]), retain_graph=retain)
