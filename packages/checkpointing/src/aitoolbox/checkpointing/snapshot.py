"""Copy training state to CPU memory for saving, checking that it is plain data (``weights_only``-loadable)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from aitoolbox.checkpointing.errors import CheckpointConfigError

__all__ = ["SnapshotBuffers", "check_plain"]

_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def _numpy_to_plain(obj: Any) -> tuple[bool, Any]:
    module = type(obj).__module__
    if not module.startswith("numpy"):
        return False, None
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():
        return True, obj.item()  # numpy scalar -> Python scalar
    if hasattr(obj, "__array__") and getattr(obj, "dtype", None) is not None and obj.dtype != object:
        return True, torch.from_numpy(obj.copy())  # numpy array -> tensor
    return False, None


def check_plain(obj: Any, path: str = "state") -> Any:
    """Return ``obj`` with NumPy values converted, or raise if something is not tensors and plain data.

    Raises:
        CheckpointConfigError: naming the path of the first offending value and its type.
    """
    converted, value = _numpy_to_plain(obj)  # first: np.float64 is a float subclass that weights_only refuses
    if converted:
        return value
    if isinstance(obj, (torch.Tensor, *_SCALARS)):
        return obj
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if not isinstance(k, str | int | float | bool | type(None) | tuple):
                raise CheckpointConfigError(f"{path} has a key of type {type(k).__name__}; use str or int keys")
            out[k] = check_plain(v, f"{path}[{k!r}]")
        return out
    if isinstance(obj, list | tuple):
        items = [check_plain(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointConfigError(
        f"{path} is a {type(obj).__module__}.{type(obj).__qualname__}: checkpoints hold tensors and plain data only "
        "(they load with torch.load(weights_only=True)); store its state_dict() or a float/str instead"
    )


class SnapshotBuffers:
    """Copies the tensors of a state tree into CPU buffers that are kept and reused from one snapshot to the next.

    Reuse matters: a fresh buffer costs page faults on first touch (measured 1-1.6 GB/s), a warm one copies at
    memory speed. CUDA tensors go to pinned buffers with non-blocking copies and one synchronisation per snapshot.
    A buffer is overwritten by the next snapshot, so the caller must be done with a snapshot (written it) first.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def snapshot(self, state: Any, path: str = "state") -> Any:
        """A copy of ``state`` whose tensors live in this object's CPU buffers."""
        any_cuda = [False]
        out = self._copy(check_plain(state, path), path, any_cuda)
        if any_cuda[0]:
            torch.cuda.synchronize()
        return out

    def _copy(self, obj: Any, path: str, any_cuda: list[bool]) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._copy_tensor(obj, path, any_cuda)
        if isinstance(obj, dict):
            out = OrderedDict() if isinstance(obj, OrderedDict) else {}
            for k, v in obj.items():
                out[k] = self._copy(v, f"{path}/{k}", any_cuda)
            return out
        if isinstance(obj, list | tuple):
            items = [self._copy(v, f"{path}/{i}", any_cuda) for i, v in enumerate(obj)]
            return items if isinstance(obj, list) else tuple(items)
        return obj

    def _copy_tensor(self, t: torch.Tensor, path: str, any_cuda: list[bool]) -> torch.Tensor:
        t = t.detach()
        if t.layout != torch.strided or t.is_quantized or t.numel() == 0:
            return t.to("cpu", copy=True)
        buf = self._buffers.get(path)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            pin = t.is_cuda
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
            self._buffers[path] = buf
        if t.is_cuda:
            any_cuda[0] = True
            buf.copy_(t, non_blocking=True)
        else:
            buf.copy_(t)
        return buf
