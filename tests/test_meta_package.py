"""The assembled surface: the import paths users write, and what they expose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aitoolbox.torchtrain
import aitoolbox.torchtrain.callbacks
import aitoolbox.torchtrain.train_loop
from aitoolbox.loop import TrainLoop as EngineTrainLoop
from aitoolbox.torchtrain._names import TOP_LEVEL as TOP


def test_star_import_gives_the_train_loops() -> None:
    namespace: dict[str, object] = {}
    exec("from aitoolbox.torchtrain.train_loop import *", namespace)
    assert namespace["TrainLoop"] is EngineTrainLoop
    assert issubclass(namespace["TrainLoopCheckpoint"], EngineTrainLoop)
    assert sorted(aitoolbox.torchtrain.train_loop.__all__) == [
        "TrainLoop",
        "TrainLoopCheckpoint",
        "TrainLoopCheckpointEndSave",
        "TrainLoopEndSave",
    ]
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


def test_aitoolbox_spans_every_package_and_the_meta_package_owns_its_init() -> None:
    import aitoolbox

    # pkgutil-style: the meta-package ships aitoolbox/__init__.py, which extends the path over every package's
    # aitoolbox/ folder (one folder in a wheel install, one per package in this editable checkout)
    assert Path(aitoolbox.__file__ or "").parts[-2:] == ("aitoolbox", "__init__.py")
    folders = {Path(p).resolve() for p in aitoolbox.__path__}
    for sub in ("loop", "checkpointing", "experiment", "cloud", "torchtrain"):
        assert any((folder / sub).is_dir() for folder in folders), sub
        assert __import__(f"aitoolbox.{sub}", fromlist=["_"]).__name__ == f"aitoolbox.{sub}"


def test_top_level_has_the_original_names_lazily() -> None:
    code = (
        "import sys; import aitoolbox; heavy = {'torch', 'sklearn', 'boto3'} & set(sys.modules); print(sorted(heavy)); "
        "from aitoolbox import TrainLoop, TTModel; print('sklearn' in sys.modules, 'boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"  # `import aitoolbox` imports nothing heavy
    assert out[1] == "False False"  # TrainLoop needs neither scikit-learn nor boto3

    import aitoolbox
    import aitoolbox.torchtrain.callbacks as callbacks
    from aitoolbox.torchtrain._names import CALLBACKS, EXPERIMENT, TORCHTRAIN

    assert sorted(aitoolbox.__all__) == sorted({*TORCHTRAIN, *CALLBACKS, *EXPERIMENT})
    assert sorted(aitoolbox.torchtrain.__all__) == sorted([*TORCHTRAIN, "__version__"])
    assert set(CALLBACKS) <= set(callbacks.__all__)
    for name in aitoolbox.__all__:
        assert getattr(aitoolbox, name) is getattr(__import__(TOP[name], fromlist=["_"]), name)
    assert aitoolbox.TrainLoop is EngineTrainLoop
    assert aitoolbox.TrainLoopCheckpointEndSave is aitoolbox.torchtrain.train_loop.TrainLoopCheckpointEndSave
    namespace: dict[str, object] = {}
    exec("from aitoolbox import *", namespace)
    assert {"TrainLoop", "TTModel", "ModelWrap", "EarlyStopping", "ClassificationResultPackage"} <= set(namespace)
    assert "TrainLoop" in dir(aitoolbox)
    try:
        aitoolbox.NoSuchThing  # noqa: B018
    except AttributeError as err:
        assert "has no attribute 'NoSuchThing'" in str(err)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_original_module_paths() -> None:
    from aitoolbox.torchtrain.callbacks.performance_eval import ModelPerformancePrintReport, ModelTrainHistoryPlot
    from aitoolbox.torchtrain.data.batch_model_feed_defs import AbstractModelFeedDefinition
    from aitoolbox.torchtrain.data.dataset import BasicDataset, ListDataset
    from aitoolbox.torchtrain.train_loop.train_loop import TrainLoop
    from aitoolbox.torchtrain.train_loop.train_loop_tracking import TrainLoopCheckpointEndSave

    assert TrainLoop is EngineTrainLoop and issubclass(TrainLoopCheckpointEndSave, TrainLoop)
    assert AbstractModelFeedDefinition is aitoolbox.torchtrain.AbstractModelFeedDefinition
    assert BasicDataset([1, 2])[1] == 2 and ListDataset([1, 2], [3, 4])[0] == (1, 3)
    assert ModelPerformancePrintReport.__module__ == ModelTrainHistoryPlot.__module__


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
        model,
        loader,
        loader,
        None,
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        "p",
        "e",
        tmp_path,
        val_result_package=ClassificationResultPackage(),
        extensions=[mine],
        device="cpu",
    )
    kinds = [type(e).__name__ for e in tl.extensions]
    assert kinds == ["ExperimentFolder", "Checkpointing", "CloudMirror", "EndSave", "Mine"]
    tl.fit(num_epochs=1, note="hello")
    assert mine.note == "hello"
    assert mine.results_then == {}  # extensions finish last-attached first: yours before the end save
    assert "accuracy" in tl.results["validation"] and tl.checkpoint_manager is not None


def test_a_missing_member_distribution_is_named_with_its_install() -> None:
    """The packages are separate distributions: one can be missing (``pip install --no-deps``, an uninstall). The
    error names the install instead of ``No module named 'aitoolbox.checkpointing'`` (the wheel-only check is in
    ``scripts/test_wheels.sh``)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.path[:] = [p for p in sys.path if 'packages/checkpointing' not in p]  # as if it were not installed\n"
        "try:\n"
        "    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint\n"
        "except ModuleNotFoundError as err:\n"
        "    print(err.name, '|', err)\n"
        "from aitoolbox.loop import TrainLoop  # what is installed still imports\n"
        "import aitoolbox.loop.nothing_here\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    name, message = proc.stdout.strip().split(" | ")
    assert name == "aitoolbox.checkpointing"
    assert "the aitoolbox-checkpointing distribution is not installed" in message
    assert "`pip install aitoolbox-checkpointing`" in message
    assert "No module named 'aitoolbox.loop.nothing_here'" in proc.stderr  # a missing module stays Python's error
    assert "pip install" not in proc.stderr


def test_the_tracked_variants_agree_on_their_shared_arguments() -> None:
    """Shared names come in the same order, with the same kind and default, in all three tracked variants; each
    forwards its arguments to ``super().__init__`` by keyword (a positional slip cannot shift them)."""
    import ast
    import inspect

    from aitoolbox.torchtrain._composition import variants as _variants
    from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave

    variants = (TrainLoopCheckpoint, TrainLoopEndSave, TrainLoopCheckpointEndSave)
    signatures = [inspect.signature(v.__init__).parameters for v in variants]
    for a in signatures:
        for b in signatures:
            shared = [n for n in a if n in b]
            assert shared == [n for n in b if n in a]  # the same order
            for name in shared:
                same = (a[name].kind, a[name].default, a[name].annotation)
                assert same == (b[name].kind, b[name].default, b[name].annotation), name
    tree = ast.parse(inspect.getsource(_variants))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
    ]
    assert len(calls) == 3 and all(not call.args for call in calls)
