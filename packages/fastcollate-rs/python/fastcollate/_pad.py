"""``pad_collate``: variable-length sequences into one padded tensor, with lengths and a mask, in one copy."""

from __future__ import annotations

import collections.abc
import math
import struct
from typing import Any, NamedTuple

import torch

from fastcollate import _buffers, _native
from fastcollate._collate import _RAW_DTYPES, collate_with, stack_tensors
from fastcollate._config import check_positive, copy_threads
from fastcollate.errors import CollateDtypeError, CollateShapeError, CollateTypeError

__all__ = ["PaddedBatch", "pad_collate"]


class PaddedBatch(NamedTuple):
    """A batch of padded sequences.

    Attributes:
        data: ``[batch, max_len, *features]``, each row a sequence followed by the pad value.
        lengths: int64 ``[batch]``, each sequence's length.
        mask: bool ``[batch, max_len]``, True at real (not padded) positions.
    """

    data: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor


def pad_collate(
    batch: collections.abc.Sequence[Any],
    pad_value: float = 0,
    *,
    pad_to_multiple_of: int | None = None,
    pin_memory: bool | None = None,
) -> Any:
    """Collates samples whose tensors differ in length along dim 0, padding them in the same copy.

    Every tensor or numpy-array leaf with at least one dimension becomes a :class:`PaddedBatch`; everything else
    (labels, scalars, strings) is collated as :func:`fastcollate.collate` does. The replacement for a Python
    ``collate_fn`` built on ``torch.nn.utils.rnn.pad_sequence(batch_first=True)``.

    Args:
        batch: the samples: sequences, or dicts / tuples holding sequences.
        pad_value: the value written after each sequence (cast to the sequences' dtype).
        pad_to_multiple_of: round the padded length up to a multiple of this (e.g. 8 for tensor cores).
        pin_memory: as in :func:`fastcollate.collate`.

    Returns:
        A :class:`PaddedBatch`, or the samples' structure with a :class:`PaddedBatch` per sequence leaf.

    Raises:
        CollateShapeError: sequences whose trailing dimensions differ.
        CollateDtypeError: sequences of different dtypes.
        CollateTypeError: GPU or nested tensors, or object arrays.

    Example:
        >>> import torch, fastcollate
        >>> out = fastcollate.pad_collate([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_value=-1)
        >>> out.data
        tensor([[ 1,  2,  3],
                [ 4, -1, -1]])
        >>> out.lengths, out.mask[1]
        (tensor([3, 1]), tensor([ True, False, False]))
    """
    check_positive("pad_to_multiple_of", pad_to_multiple_of)

    def pad(column: list[Any], path: str, pin: bool | None) -> Any:
        return _pad_column(column, path, pad_value, pad_to_multiple_of, pin)

    return collate_with(batch, pad, pin_memory)


def _pad_column(
    column: list[Any], path: str, pad_value: float, multiple: int | None, pin: bool | None
) -> PaddedBatch | torch.Tensor:
    if type(column[0]) is not torch.Tensor:  # numpy sequences: zero-copy tensors first
        column = [torch.as_tensor(t) if type(t).__module__ == "numpy" else t for t in column]
    elem = column[0]
    if elem.dim() == 0:
        return stack_tensors(column, path, pin)
    if elem.is_nested or elem.layout is not torch.strided:
        raise CollateTypeError(f"sample 0{path} is a nested or sparse tensor; pad_collate takes dense tensors")
    dtype, features = elem.dtype, elem.shape[1:]
    if dtype not in _RAW_DTYPES:
        raise CollateTypeError(f"sample 0{path} has dtype {dtype}, which pad_collate does not support")
    keep: list[torch.Tensor] = []  # contiguous copies of unusual samples, alive until the copy is done
    length_bytes: bytes | bytearray
    found = _native.tensor_addresses(column, torch.Tensor, dtype, list(elem.shape), vary_first=True, allow_grad=True)
    if found is not None:
        addresses, length_bytes, max_len = found
        lengths = torch.frombuffer(length_bytes, dtype=torch.int64)
    else:
        addresses, sizes = [], []
        for i, t in enumerate(column):
            t = _normalise(torch.as_tensor(t) if type(t).__module__ == "numpy" else t, i, path, elem)
            keep.append(t)
            sizes.append(t.shape[0])
            addresses.append(t.data_ptr())
        length_bytes = struct.pack(f"={len(sizes)}q", *sizes)
        lengths = torch.tensor(sizes, dtype=torch.int64)
        max_len = max(sizes)
    if multiple:
        max_len = -(-max_len // multiple) * multiple
    batch = len(column)
    data = _buffers.empty((batch, max_len, *features), dtype, pin=pin)
    mask = _buffers.empty((batch, max_len), torch.bool, pin=pin)
    _native.pad_into(
        (data.data_ptr(), data.nbytes),
        (mask.data_ptr(), mask.nbytes),
        addresses,
        length_bytes,
        elem.element_size() * features.numel(),
        max_len,
        _pattern(pad_value, dtype),
        copy_threads(),
    )
    del keep
    return PaddedBatch(data, lengths, mask)


_patterns: dict[tuple[float, torch.dtype], bytes] = {}


def _pattern(pad_value: float, dtype: torch.dtype) -> bytes:
    """The bytes of ``pad_value`` as one ``dtype`` scalar (cached: building it costs a few tensor ops)."""
    key = (pad_value, dtype)
    pattern = _patterns.get(key)
    if pattern is None:
        _check_pad_value(pad_value, dtype)
        pattern = bytes(torch.tensor([pad_value]).to(dtype).view(torch.uint8).tolist())
        if len(_patterns) < 64:
            _patterns[key] = pattern
    return pattern


def _check_pad_value(pad_value: Any, dtype: torch.dtype) -> None:
    """Refuse a ``pad_value`` that ``dtype`` cannot hold exactly: a cast would wrap it (300 -> 44 in uint8, NaN ->
    INT64_MIN) or round it, and the padding would silently be another value."""
    if isinstance(pad_value, bool) or not isinstance(pad_value, int | float):
        raise CollateDtypeError(f"pad_value must be a number, got {pad_value!r}")
    if dtype == torch.bool:
        fits = pad_value in (0, 1)
    elif dtype.is_floating_point or dtype.is_complex:
        fits = math.isnan(pad_value) or math.isinf(pad_value) or abs(pad_value) <= torch.finfo(dtype).max
    else:
        info = torch.iinfo(dtype)
        fits = math.isfinite(pad_value) and pad_value == int(pad_value) and info.min <= pad_value <= info.max
    if not fits:
        raise CollateDtypeError(
            f"pad_value={pad_value!r} cannot be stored in the sequences' dtype {dtype} (it would become another "
            "value); choose a value that dtype holds, e.g. 0"
        )


def _normalise(t: Any, i: int, path: str, elem: torch.Tensor) -> torch.Tensor:
    """Sample ``i`` as a plain contiguous tensor like sample 0, or the error that says why it cannot be."""
    if not isinstance(t, torch.Tensor):
        raise CollateTypeError(f"sample {i}{path} is a {type(t).__name__}, but sample 0{path} is a tensor")
    if t.dtype is not elem.dtype:
        raise CollateDtypeError(f"sample {i}{path} has dtype {t.dtype} but sample 0{path} has {elem.dtype}")
    if t.ndim != elem.ndim or t.shape[1:] != elem.shape[1:]:
        raise CollateShapeError(
            f"sample {i}{path} has shape {tuple(t.shape)} but sample 0{path} has {tuple(elem.shape)}: "
            "sequences may differ in length (dim 0) only"
        )
    if t.is_nested or t.layout is not torch.strided:
        raise CollateTypeError(f"sample {i}{path} is a nested or sparse tensor; pad_collate takes dense tensors")
    if not t.is_cpu:
        raise CollateTypeError(f"sample {i}{path} is on {t.device}; pad_collate works on CPU tensors")
    return t.detach().contiguous().resolve_neg().resolve_conj().as_subclass(torch.Tensor)
