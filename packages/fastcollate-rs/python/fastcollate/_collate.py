"""``collate``: a drop-in for ``torch.utils.data.default_collate`` whose copies run in Rust.

Python looks at the first sample once to build a plan (the nesting of dicts, lists and tuples down to the leaves),
Rust transposes the whole batch into one column per leaf (ints, floats and bools straight into typed buffers), and
each tensor column is stacked: large items by the Rust copy kernel into reused memory, small ones by
``torch.stack`` (whose per-item cost is lower than any per-item check from Python).
"""

from __future__ import annotations

import collections.abc
import copy
from typing import Any

import torch
from torch.utils.data import default_collate

from fastcollate import _buffers, _native
from fastcollate._config import arrays_readable, copy_threads, in_worker, openmp_bound
from fastcollate._plan import Unsupported, flat_plan, is_numpy, plan
from fastcollate.errors import CollateDtypeError, CollateShapeError, CollateTypeError

__all__ = ["collate"]


# Below these sizes torch.stack wins: it validates and copies in C++ with no per-item Python call.
RAW_MIN_ITEM_BYTES = 16 * 1024
RAW_MIN_BATCH_BYTES = 1 << 20

# at::internal::GRAIN_SIZE: a CPU op over this many elements or more may run on the intra-op thread pool.
_GRAIN = 32768
# Stacks of small rows up to this size run on torch's serial path (see _stack_small); larger ones in chunks.
SERIAL_MAX_BYTES = 1 << 20
# Chunked stacking (see _stack_in_chunks) needs this many rows per chunk to repay the join.
_CHUNK_MIN_ITEMS = 256

_RAW_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)


def _rebuild(tree: Any, values: collections.abc.Iterator[Any]) -> Any:
    """Reassembles the batch exactly as default_collate shapes it."""
    tag = tree[0]
    if tag == "leaf":
        return next(values)
    if tag == "map":
        _, elem, keys, children = tree
        parts = {k: _rebuild(c, values) for k, c in zip(keys, children, strict=True)}
        clone = copy.copy(elem)
        clone.update(parts)
        return clone
    if tag == "namedtuple":
        return tree[1](*(_rebuild(c, values) for c in tree[2]))
    if tag == "tuple":
        return [_rebuild(c, values) for c in tree[2]]
    clone = copy.copy(tree[1])
    for i, child in enumerate(tree[2]):
        clone[i] = _rebuild(child, values)
    return clone


def collate(batch: collections.abc.Sequence[Any], *, pin_memory: bool | None = None) -> Any:
    """Collates a list of samples into a batch, exactly as ``default_collate`` does, faster.

    The output equals ``torch.utils.data.default_collate(batch)`` in structure (dict, list, tuple, namedtuple,
    nested), dtype, shape and values for tensors, numpy arrays and scalars, ints, floats, bools and strings;
    anything else is handed to ``default_collate``. Large tensors are copied by Rust threads (GIL released) into
    memory that is reused once the previous batch is gone; with CUDA the output is pinned, so
    ``DataLoader(pin_memory=True)`` costs no second copy; inside workers it is in shared memory.

    Args:
        batch: the samples, as a DataLoader passes them.
        pin_memory: put large outputs in pinned memory; ``None`` (default) pins when CUDA is available.

    Returns:
        The batch.

    Raises:
        CollateShapeError: tensors of different shapes (names the sample, the field and both shapes).
        CollateDtypeError: a sample whose dtype would change the batch's (sample 0's) dtype.
        CollateStructureError: a sample whose keys, length or container type differ from sample 0's.
        CollateTypeError: object or string numpy arrays, nested or sparse tensors.

    Example:
        >>> import torch, fastcollate
        >>> batch = fastcollate.collate([{"x": torch.ones(2), "y": 1}, {"x": torch.zeros(2), "y": 0}])
        >>> batch["x"].shape, batch["y"]
        (torch.Size([2, 2]), tensor([1, 0]))
    """
    return collate_with(batch, stack_tensors, pin_memory)


TensorFn = collections.abc.Callable[[list[Any], str, "bool | None"], Any]


def collate_with(batch: collections.abc.Sequence[Any], tensor_fn: TensorFn, pin_memory: bool | None) -> Any:
    """``collate`` with ``tensor_fn(column, path, pin)`` batching each tensor or numpy-array leaf."""
    if not isinstance(batch, list):
        batch = list(batch)
    if not batch:
        return default_collate(batch)
    elem = batch[0]
    if isinstance(elem, torch.Tensor):
        out = tensor_fn(batch, "", pin_memory)
        return _buffers.pack_shared([out])[0] if in_worker() else out
    if is_numpy(elem):  # a batch of arrays or numpy scalars: the batch is the one column, nothing to transpose
        leaf: list[tuple[str, str]] = []
        try:
            plan(elem, "", leaf)
        except Unsupported:
            return default_collate(batch)
        return _finish(leaf[0][0], "", batch, tensor_fn, pin_memory)
    flat = flat_plan(elem)
    if flat is not None:  # a dict, tuple or list of plain leaves: no tree to walk or rebuild
        keys, spec, leaves = flat
        tree = None
    else:
        plan_leaves: list[tuple[str, str]] = []
        try:
            spec, tree = plan(elem, "", plan_leaves)
        except Unsupported:
            return default_collate(batch)
        leaves = tuple(plan_leaves)
    columns = _native.columns(batch, spec)
    if columns is None:  # a scalar of another type somewhere: default_collate's promotion rules apply
        return default_collate(batch)
    values = [
        _finish(kind, path, col, tensor_fn, pin_memory) for (kind, path), col in zip(leaves, columns, strict=True)
    ]
    if in_worker():
        values = _buffers.pack_shared(values)
    if tree is not None:
        return _rebuild(tree, iter(values))
    # default_collate: a dict is copied and updated (same keys, same order), a tuple or list becomes a list
    return dict(zip(keys, values, strict=True)) if keys is not None else values


def _finish(kind: str, path: str, column: Any, tensor_fn: TensorFn, pin: bool | None) -> Any:
    if kind == "tensor":
        return tensor_fn(column, path, pin)
    if kind == "int":
        return torch.frombuffer(column, dtype=torch.int64)
    if kind == "float":
        return torch.frombuffer(column, dtype=torch.float64)
    if kind == "bool":
        return torch.frombuffer(column, dtype=torch.bool)
    if kind == "str":
        return column
    if kind == "str_tuple":
        return tuple(column)
    if kind == "npscalar":
        return torch.as_tensor(column)
    dtype = column[0].dtype
    if dtype.kind in "SaUO":
        raise CollateTypeError(
            f"sample 0{path} is a numpy array of dtype {dtype}: strings and objects cannot be batched; "
            "convert them to numbers in the dataset, or pass a collate_fn that keeps them as a list"
        )
    if tensor_fn is stack_tensors:
        stacked = _stack_arrays(column, pin)
        if stacked is not None:
            return stacked
    try:  # from_numpy: the same zero-copy view as as_tensor, at a third of the cost
        tensors = [torch.from_numpy(a) for a in column]
    except TypeError:
        tensors = [torch.as_tensor(a) for a in column]
    return tensor_fn(tensors, path, pin)


def _stack_arrays(column: list[Any], pin: bool | None) -> torch.Tensor | None:
    """Large numpy arrays of one shape and dtype, copied by Rust straight from their memory; None when the batch
    is small, or any array differs from the first in type, shape or dtype or is not C-contiguous (the general path
    then converts each one and names any offending sample).

    Reading each array's address in Rust (``_native.array_addresses``) saves a ``torch.from_numpy`` per array and
    the check of the tensor it makes: ~2 us per array, 0.5 ms of the 4-5 ms that a batch of 256 HWC uint8 images
    takes on 2 cores.
    """
    import numpy as np

    elem = column[0]  # an ndarray (the caller's plan says so)
    if not _raw_sized(elem.nbytes, len(column)) or not arrays_readable():
        return None
    try:
        dtype = torch.from_numpy(elem).dtype  # torch's own dtype mapping, and its refusals (byte order, ...)
    except (TypeError, ValueError):
        return None
    if dtype not in _RAW_DTYPES:
        return None
    pointers = _native.array_addresses(column, np.ndarray, list(elem.shape))
    if pointers is None:
        return None
    return _stack_raw(pointers, tuple(elem.shape), dtype, elem.nbytes, pin)


def _raw_sized(item_bytes: int, n: int) -> bool:
    """Whether ``n`` items of ``item_bytes`` are large enough for the Rust copy to beat ``torch.stack``."""
    return item_bytes >= RAW_MIN_ITEM_BYTES and item_bytes * n >= RAW_MIN_BATCH_BYTES


def _stack_raw(
    pointers: list[int], shape: tuple[int, ...], dtype: torch.dtype, item_bytes: int, pin: bool | None
) -> torch.Tensor:
    """The items at ``pointers`` (checked, live, ``item_bytes`` each) copied by Rust into a batch output (reused,
    pinned or shared memory: ``_buffers.empty``)."""
    out = _buffers.empty((len(pointers), *shape), dtype, pin=pin)
    _native.stack_into((out.data_ptr(), out.nbytes), pointers, item_bytes, copy_threads())
    return out


def stack_tensors(column: list[torch.Tensor], path: str, pin: bool | None) -> torch.Tensor:
    elem = column[0]
    if elem.is_nested:
        raise CollateTypeError(
            f"sample 0{path} is a nested tensor, which cannot be stacked; use fastcollate.pad_collate "
            "for variable-length sequences"
        )
    if elem.layout is not torch.strided:
        raise CollateTypeError(
            f"sample 0{path} is a sparse tensor ({elem.layout}); convert it with .to_dense() in the dataset"
        )
    item_bytes = elem.nbytes
    if _raw_sized(item_bytes, len(column)) and type(elem) is torch.Tensor and elem.dtype in _RAW_DTYPES:
        column = column if type(column) is list else list(column)
        found = _native.tensor_addresses(
            column, torch.Tensor, elem.dtype, list(elem.shape), vary_first=False, allow_grad=False
        )
        if found is not None:
            return _stack_raw(found[0], tuple(elem.shape), elem.dtype, item_bytes, pin)
    out: torch.Tensor | None = None
    if in_worker() and item_bytes * len(column) > _buffers.get_worker_packing() and _same_shapes(column):
        # a large output goes straight into shared memory (small ones are packed together afterwards)
        out = _buffers.empty((len(column), *elem.shape), elem.dtype, pin=False)
    try:
        stacked = _stack_small(column) if out is None else None
        if stacked is None:
            stacked = torch.stack(column, 0, out=out)
    except (RuntimeError, TypeError) as err:
        _diagnose(column, path, err)
        raise
    if stacked.dtype != elem.dtype:
        _raise_dtype(column, path)
    return stacked


def _stack_small(column: list[torch.Tensor]) -> torch.Tensor | None:
    """A stack of many small rows that torch would hand to its intra-op thread pool, done without it; None when
    torch stacks serially anyway (fewer than ``_GRAIN`` elements, one intra-op thread) or nothing here pays.

    From ``_GRAIN`` elements on, ``torch.stack`` runs on the thread pool, whose per-tensor cost is a quarter higher
    and whose wake-up costs more than copying small rows: on 2 cores, 256 rows of 128 floats stack in 41 us
    serially against 51-56 us. torch stacks serially when its thread count is 1, which with its OpenMP backend is
    a per-thread setting: up to ``SERIAL_MAX_BYTES`` it is set to 1 for this one call on this thread
    (``openmp_bound``), and nothing else sees it. Larger outputs, or where that is not possible, are stacked in
    chunks below the grain and joined (``_stack_in_chunks``).
    """
    numel = column[0].numel() * len(column)
    if numel < _GRAIN:
        return None
    threads = torch.get_num_threads()  # also settles this thread's OpenMP count, as torch does on first use
    if threads == 1:
        return None
    if numel * column[0].element_size() > SERIAL_MAX_BYTES or not openmp_bound():
        return _stack_in_chunks(column)
    try:
        _native.set_openmp_threads(1)
        return torch.stack(column)
    finally:
        _native.set_openmp_threads(threads)


def _stack_in_chunks(column: list[torch.Tensor]) -> torch.Tensor | None:
    """Many small rows stacked in chunks that each stay below torch's parallel grain, then joined; None when
    that does not pay.

    ``torch.stack`` hands a batch of ``GRAIN`` elements or more to the intra-op thread pool, whose wake-up costs
    more than copying small rows (and skips its serial kernel): on 2 cores, 1,024 rows of 32 floats stack
    12-17 % faster as two chunks joined by ``torch.cat`` (whose copies stay below the grain) than in one call.
    """
    n = len(column)
    if n < 2 * _CHUNK_MIN_ITEMS:
        return None
    numel = column[0].numel() * n
    chunks = -(-numel // (_GRAIN - 1))
    k = -(-n // chunks)
    if k < _CHUNK_MIN_ITEMS:
        return None
    return torch.cat([torch.stack(column[i : i + k]) for i in range(0, n, k)])


def _same_shapes(column: list[torch.Tensor]) -> bool:
    shape = column[0].shape
    return all(isinstance(t, torch.Tensor) and t.shape == shape for t in column)


def _diagnose(column: list[Any], path: str, err: BaseException) -> None:
    elem = column[0]
    for i, t in enumerate(column):
        if not isinstance(t, torch.Tensor):
            raise CollateTypeError(f"sample {i}{path} is a {type(t).__name__}, but sample 0{path} is a tensor") from err
        if t.shape != elem.shape:
            raise CollateShapeError(
                f"sample {i}{path} has shape {tuple(t.shape)} but sample 0{path} has {tuple(elem.shape)}; "
                "resize in the dataset, or use fastcollate.pad_collate for variable-length sequences"
            ) from err
        if t.device != elem.device:
            raise CollateTypeError(f"sample {i}{path} is on {t.device} but sample 0{path} is on {elem.device}") from err


def _raise_dtype(column: list[torch.Tensor], path: str) -> None:
    dtype = column[0].dtype
    for i, t in enumerate(column):
        if t.dtype != dtype:
            raise CollateDtypeError(
                f"sample {i}{path} has dtype {t.dtype} but sample 0{path} has {dtype}; "
                "give every sample the same dtype in the dataset (e.g. .float())"
            )
