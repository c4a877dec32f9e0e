"""The assembled surface: the import paths users write, and what they expose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_the_variants_are_a_train_loop_with_extensions_and_take_yours(tmp_path: Path) -> None:
    from typing import Any, ClassVar

    import torch
    from torch import nn, optim

    from aitoolbox.experiment.result_package import ClassificationResultPackage
    from aitoolbox.loop.extensions import FitRun, LoopExtension
    from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave

    class Mine(LoopExtension):
        fit_options: ClassVar[dict[str, Any]] = {"note": ""}

        def before_fit(self, loop: Any, run: FitRun) -> None:
            self.note = run.options["note"]

        def after_fit(self, loop: Any) -> None:
            self.results_then = dict(loop.results)  # attached last, so it finishes first: before the end save

    torch.manual_seed(0)
    model = TinyClassifier()
    loader = make_classification_loader(64, batch_size=16)
    mine = Mine()
    tl = TrainLoopCheckpointEndSave(
        model, loader, loader, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "p", "e",
        tmp_path, val_result_package=ClassificationResultPackage(), extensions=[mine], device="cpu",
    )  # fmt: skip
    kinds = [type(e).__name__ for e in tl.extensions]
    assert kinds == ["Checkpointing", "ExperimentFolder", "CloudMirror", "EndSave", "Mine"]
    tl.fit(num_epochs=1, note="hello")
    assert mine.note == "hello"
    assert mine.results_then == {}  # extensions finish last-attached first: yours before the end save
    assert "accuracy" in tl.results["validation"] and tl.checkpoint_manager is not None
