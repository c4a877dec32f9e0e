"""Process-wide settings: copy threads, whether we run inside a DataLoader worker, and torch's OpenMP runtime."""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from fastcollate import _native

__all__ = ["get_num_threads", "set_num_threads"]

_DEFAULT_MAX_THREADS = 8  # copies are memory-bound: more threads than this only contend
_num_threads: int | None = None
_max_threads: int | None = None
_openmp: bool | None = None
_arrays: bool | None = None


def check_positive(name: str, value: object) -> None:
    """The package's one int check: a positive int (not a bool) or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def set_num_threads(num_threads: int | None) -> None:
    """Sets how many threads a large copy may use in the main process (``None``: the default).

    Inside DataLoader workers copies always use one thread: the workers are the parallelism there.

    Args:
        num_threads: a positive int, or None for ``min(cpu count, 8)``.

    Raises:
        ValueError: for anything but a positive int or None.

    Example:
        >>> import fastcollate
        >>> fastcollate.set_num_threads(2)
        >>> fastcollate.get_num_threads()
        2
        >>> fastcollate.set_num_threads(None)
    """
    global _num_threads
    check_positive("num_threads", num_threads)
    _num_threads = num_threads


def get_num_threads() -> int:
    """Returns the number of threads a large copy may use in the main process."""
    global _max_threads
    if _num_threads is not None:
        return _num_threads
    if _max_threads is None:  # reading the CPU count (cgroup files) costs ~50 us: once per process
        _max_threads = min(_native.max_threads(), _DEFAULT_MAX_THREADS)
    return _max_threads


def in_worker() -> bool:
    """True inside a DataLoader worker process."""
    return get_worker_info() is not None


def copy_threads() -> int:
    return 1 if in_worker() else get_num_threads()


def openmp_bound() -> bool:
    """Whether torch's intra-op thread count can be set for the calling thread alone (``_native.set_openmp_threads``).

    True where torch runs on OpenMP and its runtime's ``omp_set_num_threads`` was found (Linux and macOS wheels),
    and torch was seen to follow it; checked once per process.
    """
    global _openmp
    if _openmp is None:
        _openmp = _bind_openmp()
    return _openmp


def _bind_openmp() -> bool:
    if not _native.bind_openmp(torch._C.__file__):
        return False
    threads = torch.get_num_threads()
    try:
        _native.set_openmp_threads(threads + 1)
        follows = torch.get_num_threads() == threads + 1
    finally:
        _native.set_openmp_threads(threads)
    return follows and torch.get_num_threads() == threads


def arrays_readable() -> bool:
    """Whether ``_native.array_addresses`` reads numpy's array objects as numpy itself does; checked once per
    process, on small probe arrays, against numpy's own attributes (data address, shape, contiguity, dtype)."""
    global _arrays
    if _arrays is None:
        _arrays = _check_array_reads()
    return _arrays


def _check_array_reads() -> bool:
    import numpy as np

    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    b = np.zeros((2, 3, 4), dtype=np.int32)
    read = _native.array_addresses
    try:
        return (
            read([a, b], np.ndarray, [2, 3, 4]) == [a.ctypes.data, b.ctypes.data]
            and read([a, np.zeros((2, 3, 8), dtype=np.int32)[:, :, ::2]], np.ndarray, [2, 3, 4]) is None  # flags
            and read([a], np.ndarray, [2, 3, 5]) is None  # dimensions
            and read([a[0]], np.ndarray, [2, 3, 4]) is None  # number of dimensions
            and read([a, b.astype(np.int64)], np.ndarray, [2, 3, 4]) is None  # dtype
        )
    except Exception:  # an unknown numpy: the general path works without this
        return False
