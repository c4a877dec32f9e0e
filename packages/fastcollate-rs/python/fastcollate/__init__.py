"""fastcollate: batch collation for PyTorch DataLoaders, with the copies in Rust.

``collate_fn=fastcollate.collate`` is a drop-in for ``default_collate``; ``pad_collate`` pads variable-length
sequences; ``BatchedTensorDataset`` gathers a whole batch of an in-memory dataset in one call; ``slot_loader`` has a
DataLoader's workers collate straight into shared slots the main process owns.
"""

from fastcollate._buffers import BufferRing, get_worker_packing, release_buffers, set_worker_packing
from fastcollate._collate import collate
from fastcollate._config import get_num_threads, set_num_threads
from fastcollate._gather import BatchedTensorDataset, batch_sampler
from fastcollate._native import __version__
from fastcollate._pad import PaddedBatch, pad_collate
from fastcollate._slots import SlotDataLoader, slot_loader
from fastcollate.errors import (
    CollateContainerError,
    CollateDtypeError,
    CollateError,
    CollateIndexError,
    CollateKeyError,
    CollateLengthError,
    CollateShapeError,
    CollateStructureError,
    CollateTypeError,
)

__all__ = [
    "BatchedTensorDataset",
    "BufferRing",
    "CollateContainerError",
    "CollateDtypeError",
    "CollateError",
    "CollateIndexError",
    "CollateKeyError",
    "CollateLengthError",
    "CollateShapeError",
    "CollateStructureError",
    "CollateTypeError",
    "PaddedBatch",
    "SlotDataLoader",
    "__version__",
    "batch_sampler",
    "collate",
    "get_num_threads",
    "get_worker_packing",
    "pad_collate",
    "release_buffers",
    "set_num_threads",
    "set_worker_packing",
    "slot_loader",
]
