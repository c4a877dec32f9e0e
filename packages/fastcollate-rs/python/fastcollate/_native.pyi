"""Rust copy kernels (private: use the ``fastcollate`` facade). Addresses are ``tensor.data_ptr()`` of live CPU
tensors; every length is checked against the layout before a byte moves."""

from typing import Any, final

__all__ = [
    "ERROR_CLASSES",
    "PLAN_CODES",
    "Segment",
    "__version__",
    "array_addresses",
    "bind_openmp",
    "columns",
    "gather_into",
    "max_threads",
    "pad_into",
    "prefault",
    "set_openmp_threads",
    "stack_into",
    "tensor_addresses",
]

__version__: str
#: the codes of a collation plan, by name (``OBJ``, ``INT``, ``FLOAT``, ``BOOL``, ``SEQ``, ``MAP``)
PLAN_CODES: dict[str, int]
#: the ``fastcollate.errors`` classes Rust raises
ERROR_CLASSES: tuple[str, ...]

def stack_into(out: tuple[int, int], srcs: list[int], item_bytes: int, threads: int) -> None:
    """Copies ``len(srcs)`` items of ``item_bytes`` bytes each, in order, into ``out`` ``(address, nbytes)``."""

def pad_into(
    out: tuple[int, int],
    mask: tuple[int, int],
    srcs: list[int],
    lengths: bytes | bytearray,
    step_bytes: int,
    max_len: int,
    pattern: bytes,
    threads: int,
) -> None:
    """Pads sequence ``i`` (``lengths[i]`` steps at ``srcs[i]``) into row ``i`` of ``out``; writes the mask."""

def gather_into(out: tuple[int, int], src: tuple[int, int], row_bytes: int, indices: list[int], threads: int) -> None:
    """Copies rows ``indices`` (negatives count from the end) of ``src`` into ``out``."""

def columns(batch: list[object] | tuple[object, ...], spec: object) -> list[list[object] | bytearray] | None:
    """One column per leaf of ``spec``; None when a scalar leaf holds a value of another type."""

def max_threads() -> int:
    """The number of hardware threads."""

def prefault(span: tuple[int, int]) -> bool:
    """Faults in every page of ``(address, nbytes)`` at once (MADV_POPULATE_WRITE); False where unsupported."""

def tensor_addresses(
    column: list[Any], plain: type, dtype: object, shape: list[int], *, vary_first: bool, allow_grad: bool
) -> tuple[list[int], bytearray, int] | None:
    """Addresses, dim-0 lengths (int64 bytes) and the longest length of plain contiguous CPU tensors; else None."""

def array_addresses(column: list[Any], ndarray: type, shape: list[int]) -> list[int] | None:
    """Data addresses of C-contiguous ``ndarray`` instances of ``shape`` sharing the first one's dtype; else None."""

def bind_openmp(library: str) -> bool:
    """Finds ``omp_set_num_threads`` in the loaded ``library`` or its dependencies (torch's OpenMP runtime)."""

def set_openmp_threads(threads: int) -> None:
    """Sets the calling thread's OpenMP thread count (``bind_openmp`` must have returned True)."""

@final
class Segment:
    """A shared-memory file mapped read-write into this process (unmapped when nothing holds it any more)."""

    @staticmethod
    def open(path: str, min_len: int, create: bool) -> Segment:
        """Maps the whole file, first grown to ``min_len`` bytes with the space reserved (``OSError`` if none)."""

    @property
    def address(self) -> int:
        """The mapping's address."""

    @property
    def nbytes(self) -> int:
        """The mapping's length."""

    def swap_if(self, offset: int, current: int, new: int) -> bool:
        """Sets the u32 at ``offset`` from ``current`` to ``new`` atomically; whether it did."""

    def load(self, offset: int) -> int:
        """The u32 at ``offset``."""

    def store(self, offset: int, value: int) -> None:
        """Stores the u32 at ``offset``."""

    def dlpack(self, nbytes: int, release: tuple[Segment, int, int] | None = None) -> object:
        """A DLPack capsule of the first ``nbytes`` bytes (uint8); freeing the tensor stores ``release[2]`` at
        offset ``release[1]`` of the segment ``release[0]``."""
