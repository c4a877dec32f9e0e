"""The assembled surface: the import paths users write, and what they expose."""

from __future__ import annotations

import subprocess
import sys

import aitoolbox.torchtrain
import aitoolbox.torchtrain.callbacks
import aitoolbox.torchtrain.train_loop
from aitoolbox.loop import TrainLoop as EngineTrainLoop


def test_star_import_gives_the_train_loops() -> None:
    namespace: dict[str, object] = {}
    exec("from aitoolbox.torchtrain.train_loop import *", namespace)
    assert namespace["TrainLoop"] is EngineTrainLoop
    assert issubclass(namespace["TrainLoopCheckpoint"], EngineTrainLoop)
    assert sorted(aitoolbox.torchtrain.train_loop.__all__) == [
        "TrainLoop", "TrainLoopCheckpoint", "TrainLoopCheckpointEndSave", "TrainLoopEndSave",
    ]  # fmt: skip
    for name in ("TrainLoopEndSave", "TrainLoopCheckpointEndSave"):
        assert issubclass(namespace[name], namespace["TrainLoop"])


def test_model_and_callback_paths() -> None:
    from aitoolbox.torchtrain.callbacks.abstract import AbstractCallback
    from aitoolbox.torchtrain.callbacks.basic import EarlyStopping, TerminateOnNaN
    from aitoolbox.torchtrain.callbacks.gradient import GradNormClip, GradValueClip
    from aitoolbox.torchtrain.model import ModelWrap, TTModel

    assert AbstractCallback is aitoolbox.torchtrain.callbacks.Callback
    assert {EarlyStopping, TerminateOnNaN, GradNormClip, GradValueClip} <= {
        getattr(aitoolbox.torchtrain.callbacks, n) for n in aitoolbox.torchtrain.callbacks.__all__
    }
    assert issubclass(ModelWrap, TTModel)
    assert aitoolbox.torchtrain.__version__


def test_aitoolbox_is_a_namespace_package() -> None:
    import aitoolbox

    assert getattr(aitoolbox, "__file__", None) is None  # PEP 420: no distribution ships aitoolbox/__init__.py
    assert len(list(aitoolbox.__path__)) >= 2  # the meta-package and core-loop both contribute


def test_import_adds_little_over_torch() -> None:
    code = (
        "import sys, torch; before = set(sys.modules); import aitoolbox.torchtrain.train_loop; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['aitoolbox']"
