"""The composition: the four variants as a :class:`~aitoolbox.loop.TrainLoop` plus extensions (experiment folder,
cloud mirror, checkpointing, end save), built from the member packages' public names only."""

from aitoolbox.torchtrain._composition.checkpointing import Checkpointing
from aitoolbox.torchtrain._composition.cloud import CloudMirror
from aitoolbox.torchtrain._composition.end_save import EndSave
from aitoolbox.torchtrain._composition.experiment import ExperimentFolder
from aitoolbox.torchtrain._composition.variants import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave

__all__ = [
    "Checkpointing",
    "CloudMirror",
    "EndSave",
    "ExperimentFolder",
    "TrainLoopCheckpoint",
    "TrainLoopCheckpointEndSave",
    "TrainLoopEndSave",
]
