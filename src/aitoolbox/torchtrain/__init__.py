"""aitoolbox.torchtrain: the assembled TrainLoop surface (``train_loop``, ``model``, ``callbacks``, ``data``).

The original AIToolbox 1.8's names here (``TrainLoop``, ``TTModel``, ``ModelWrap``...) are re-exported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitoolbox.torchtrain._lazy import lazy_exports
from aitoolbox.torchtrain._names import TORCHTRAIN
from aitoolbox.torchtrain._version import __version__

__getattr__, __dir__ = lazy_exports(__name__, TORCHTRAIN)
__all__ = [
    "AbstractModelFeedDefinition",
    "BasicDataset",
    "ModelWrap",
    "MultiGPUModelWrap",
    "MultiLoss",
    "MultiOptimizer",
    "TTBasicModel",
    "TTDataParallel",
    "TTModel",
    "TrainLoop",
    "TrainLoopCheckpoint",
    "TrainLoopCheckpointEndSave",
    "TrainLoopEndSave",
    "__version__",
]

if TYPE_CHECKING:
    from aitoolbox.torchtrain.data.batch_model_feed_defs import (
        AbstractModelFeedDefinition as AbstractModelFeedDefinition,
    )
    from aitoolbox.torchtrain.data.dataset import (
        BasicDataset as BasicDataset,
    )
    from aitoolbox.torchtrain.model import (
        ModelWrap as ModelWrap,
    )
    from aitoolbox.torchtrain.model import (
        MultiGPUModelWrap as MultiGPUModelWrap,
    )
    from aitoolbox.torchtrain.model import (
        TTBasicModel as TTBasicModel,
    )
    from aitoolbox.torchtrain.model import (
        TTModel as TTModel,
    )
    from aitoolbox.torchtrain.multi_loss_optim import (
        MultiLoss as MultiLoss,
    )
    from aitoolbox.torchtrain.multi_loss_optim import (
        MultiOptimizer as MultiOptimizer,
    )
    from aitoolbox.torchtrain.parallel import (
        TTDataParallel as TTDataParallel,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoop as TrainLoop,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopCheckpoint as TrainLoopCheckpoint,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopCheckpointEndSave as TrainLoopCheckpointEndSave,
    )
    from aitoolbox.torchtrain.train_loop import (
        TrainLoopEndSave as TrainLoopEndSave,
    )
