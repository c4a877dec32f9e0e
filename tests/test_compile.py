"""TrainLoop(compile=...) and torch.compile(ttmodel) on the CPU: the model's own get_loss, the eager loss, eager
state-dict names (checkpoints resume compiled <-> eager), compiled optimizer steps under every kind of scheduler,
graphs counted in the history, bad options refused before training. Inductor where the issue asks for it (it needs a
C compiler), aot_eager (the same graphs, eager kernels: fast to compile) elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aitoolbox.loop import LoopConfigError, TrainLoop, TTModel
from aitoolbox.loop.callbacks import LRSchedulerCallback
from aitoolbox.loop.testing import make_classification_loader
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint

pytestmark = pytest.mark.slow
AOT = {"backend": "aot_eager"}


class L2Classifier(TTModel):
    """A get_loss of its own: cross-entropy plus an L2 term (what a re-wrapped torch.compile(model) would drop)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def get_loss(self, batch: Any, criterion: Any, device: Any) -> torch.Tensor:
        x, y = batch
        return criterion(self(x), y) + 0.01 * sum((p**2).sum() for p in self.parameters())  # type: ignore[no-any-return]

    def get_predictions(self, batch: Any, device: Any) -> Any:
        x, y = batch
        return self(x).argmax(1), y, None


@pytest.fixture(autouse=True)
def fresh_compile_cache() -> None:
    """torch.compile's caches are per process: without a reset, what a test compiles depends on the tests that ran
    before it in the same worker (graphs compiled there are reused: 0 new ones)."""
    torch.compiler.reset()


def _loop(model: Any = None, *, variant: Any = TrainLoop, sched: Any = None, **options: Any) -> TrainLoop:
    torch.manual_seed(0)
    model = L2Classifier() if model is None else model
    loader = make_classification_loader(100, batch_size=16)  # a ragged last batch of 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # a torch.compile(model)'s are the model's own
    if variant is TrainLoop:
        return TrainLoop(model, loader, loader, None, opt, nn.CrossEntropyLoss(), device="cpu", **options)
    return variant(
        model,
        loader,
        loader,
        None,
        opt,
        nn.CrossEntropyLoss(),
        "compile",
        "run",
        options.pop("root"),
        {},
        device="cpu",
        **options,
    )


def _diff(a: TrainLoop, b: TrainLoop) -> float:
    pairs = zip(a.tt_model.state_dict().values(), b.tt_model.state_dict().values(), strict=True)
    return max(float((p - q).abs().max()) for p, q in pairs)


def test_torch_compile_of_a_ttmodel_keeps_its_get_loss_and_compile_true_the_eager_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eager = _loop()
    eager.fit(num_epochs=2)
    torch.manual_seed(0)
    model = L2Classifier()  # the same initial weights as the eager run's
    with caplog.at_level(logging.INFO):
        wrapped = _loop(torch.compile(model))  # inductor
    assert wrapped.model is model and wrapped.tt_model is model, "unwrapped, not re-wrapped in ModelWrap"
    assert any("torch.compile(L2Classifier)" in r.getMessage() for r in caplog.records)
    caplog.set_level(logging.DEBUG, logger="aitoolbox.loop.compiling")
    wrapped.fit(num_epochs=2)
    assert any("recompiled" in r.getMessage() for r in caplog.records), "the ragged batch's recompile is explained"
    caplog.set_level(logging.WARNING, logger="aitoolbox.loop.compiling")
    assert wrapped.train_history["loss"] == pytest.approx(eager.train_history["loss"], abs=1e-6)  # the L2 term kept
    option = _loop(compile=True)  # inductor, in place
    option.fit(num_epochs=2)
    assert option.train_history["loss"] == pytest.approx(eager.train_history["loss"], abs=1e-4)
    assert list(option.model.state_dict()) == list(eager.model.state_dict())  # no _orig_mod. prefix
    graphs = option.train_history["compiled_graphs"]
    assert graphs[1] == 0, f"no graph after the first epoch (the ragged batch's and evaluation's included): {graphs}"


@pytest.mark.parametrize(("first", "then"), [(AOT, AOT), (AOT, None), (None, AOT)], ids=["c-c", "c-e", "e-c"])
def test_checkpoints_resume_between_compiled_and_eager(tmp_path: Path, first: Any, then: Any) -> None:
    whole = _loop(variant=TrainLoopCheckpoint, root=tmp_path / "whole", compile=then)
    whole.fit(num_epochs=2)
    cut = _loop(variant=TrainLoopCheckpoint, root=tmp_path / "cut", compile=first)
    cut.fit(num_iterations=10)  # inside the second epoch (7 batches an epoch): a mid-epoch checkpoint
    resumed = _loop(variant=TrainLoopCheckpoint, root=tmp_path / "cut", compile=then)
    resumed.fit(num_epochs=2, resume_from="latest")
    assert _diff(whole, resumed) == 0.0 if first == then else _diff(whole, resumed) <= 1e-6


# each kind of schedule (per step, per epoch, on a metric), made before the TrainLoop (it patches optimizer.step
# first) or by the callback at registration
SCHEDULERS = {
    "StepLR-iteration": (lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, 0.5), "iteration", "before the loop"),
    "OneCycleLR-iteration": (
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, total_steps=21),
        "iteration",
        "at registration",
    ),
    "CosineAnnealingLR-epoch": (
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3),
        "epoch",
        "at registration",
    ),
    "ReduceLROnPlateau-epoch": (
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
        "epoch",
        "before the loop",
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_compiled_optimizer_step_under_each_scheduler(name: str) -> None:
    factory, every, made = SCHEDULERS[name]
    runs = []
    for options in ({}, {**AOT, "optimizer": True, "model": False}):
        tl = _loop(compile=options or None)
        sched = factory(tl.optimizer) if made == "before the loop" else factory
        tl.fit(num_epochs=3, callbacks=[LRSchedulerCallback(sched, step_every=every)])
        runs.append(tl)
    eager, compiled = runs
    assert _diff(eager, compiled) <= 1e-6
    assert float(compiled.optimizer.param_groups[0]["lr"]) == pytest.approx(eager.optimizer.param_groups[0]["lr"])
    assert compiled.train_history["compiled_graphs"][1:] == [0, 0], "a new learning rate is not a recompile"


def test_bad_compile_options_are_refused_at_construction() -> None:
    with pytest.raises(LoopConfigError, match=r"unknown compile option\(s\) \['mdoe'\].*'mode'"):
        _loop(compile={"mdoe": "max-autotune"})
    with pytest.raises(LoopConfigError, match="compile must be True, False or a dict"):
        _loop(compile="yes")
    with pytest.raises(LoopConfigError, match=r"names 'get_loss', which is method .* not an nn.Module"):
        _loop(compile={"blocks": ["get_loss"]})
    with pytest.raises(LoopConfigError, match=r"compile\['optimizer'\] must be True or False"):
        _loop(compile={"optimizer": "yes"})


def test_blocks_compile_submodules_one_by_one() -> None:
    tl = _loop(compile={**AOT, "blocks": ["net.0", "net.2"]})
    tl.fit(num_epochs=1)
    assert tl.train_history["compiled_graphs"][0] >= 2
    assert all(not k.startswith("_orig_mod") for k in tl.model.state_dict())


def test_the_experiment_summary_counts_the_graphs(tmp_path: Path) -> None:
    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.torchtrain.train_loop import TrainLoopEndSave

    tl = _loop(variant=TrainLoopEndSave, root=tmp_path, compile=AOT, val_result_package=ClassificationResultPackage())
    tl.fit(num_epochs=2)
    graphs = tl.train_history["compiled_graphs"]
    summary = (tl.experiment_dir / "summary.md").read_text()
    assert f"torch.compile: {sum(graphs)} graph(s) compiled over the run" in summary and sum(graphs) >= 1
