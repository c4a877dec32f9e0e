"""aitoolbox.checkpointing: crash-safe checkpoints with verified loading, retention and background saving."""

from aitoolbox.checkpointing._version import __version__
from aitoolbox.checkpointing.errors import (
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)
from aitoolbox.checkpointing.finite import first_non_finite
from aitoolbox.checkpointing.manager import CheckpointInfo, CheckpointManager, LoadedCheckpoint
from aitoolbox.checkpointing.rng import capture_rng_state, restore_rng_state
from aitoolbox.checkpointing.sharded import GroupCollective, ShardedState
from aitoolbox.checkpointing.snapshot import SnapshotBuffers, check_plain

__all__ = [
    "CheckpointConfigError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointIncompatibleError",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "GroupCollective",
    "LoadedCheckpoint",
    "ShardedState",
    "SnapshotBuffers",
    "__version__",
    "capture_rng_state",
    "check_plain",
    "first_non_finite",
    "restore_rng_state",
]
