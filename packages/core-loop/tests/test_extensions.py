"""The public extension seam (aitoolbox.loop.extensions) on a real TrainLoop: hook order, fit options, skipping
training, errors, and callbacks stopping through request_stop."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import nn, optim

from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.extensions import FitRun, LoopExtension
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader


def _loop(*extensions: LoopExtension, batches: int = 4) -> TrainLoop:
    torch.manual_seed(0)
    model = TinyClassifier()
    return TrainLoop(
        model,
        make_classification_loader(16 * batches, batch_size=16),
        make_classification_loader(32),
        None,
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        device="cpu",
        extensions=extensions,
    )


class Recorder(LoopExtension):
    fit_options: ClassVar[dict[str, Any]] = {"tag": "default"}

    def __init__(self, log: list[str], label: str = "r") -> None:
        self.log, self.label = log, label
        self.seen_options: dict[str, Any] = {}

    def attach(self, loop: TrainLoop) -> None:
        self.log.append(f"{self.label}.attach")

    def check_fit(self, loop: TrainLoop, run: FitRun) -> None:
        self.log.append(f"{self.label}.check_fit")
        self.seen_options = dict(run.options)

    def before_fit(self, loop: TrainLoop, run: FitRun) -> None:
        self.log.append(f"{self.label}.before_fit:{loop.callbacks == []}")

    def on_fit_start(self, loop: TrainLoop) -> None:
        self.log.append(f"{self.label}.on_fit_start:{loop.iteration}")

    def after_fit(self, loop: TrainLoop) -> None:
        self.log.append(f"{self.label}.after_fit:{loop.epochs_done}")

    def on_error(self, loop: TrainLoop, error: BaseException) -> None:
        self.log.append(f"{self.label}.on_error:{type(error).__name__}")


def test_hooks_run_in_order_around_training_and_finish_last_attached_first() -> None:
    log: list[str] = []
    first, second = Recorder(log, "a"), Recorder(log, "b")
    tl = _loop(first, second)
    assert log == ["a.attach", "b.attach"]
    tl.fit(num_epochs=2, tag="mine")
    assert log[2:] == [
        "a.check_fit",
        "b.check_fit",
        "a.before_fit:True",
        "b.before_fit:True",
        "a.on_fit_start:0",
        "b.on_fit_start:0",
        "b.after_fit:2",
        "a.after_fit:2",
    ]
    assert first.seen_options == {"tag": "mine"} and len(tl.train_history["loss"]) == 2


def test_fit_options_get_defaults_and_unknown_ones_are_refused_by_name() -> None:
    recorder = Recorder([])
    tl = _loop(recorder)
    tl.fit(num_epochs=1)
    assert recorder.seen_options == {"tag": "default"}
    with pytest.raises(LoopConfigError, match=r"unknown option\(s\) \['tga'\]; TrainLoop.fit takes .*, tag"):
        tl.fit(num_epochs=1, tga="x")
    with pytest.raises(LoopConfigError, match=r"unknown option\(s\) \['resume_from'\]"):
        _loop().fit(num_epochs=1, resume_from="latest")


def test_before_fit_can_shorten_the_run_add_a_callback_or_skip_training() -> None:
    class Shorten(LoopExtension):
        def __init__(self) -> None:
            self.callback = Callback("added")
            self.skip = False

        def before_fit(self, loop: TrainLoop, run: FitRun) -> None:
            run.num_epochs = 1
            run.callbacks.append(self.callback)
            run.train = not self.skip

    ext = Shorten()
    tl = _loop(ext)
    tl.fit(num_epochs=5)
    assert tl.epochs_done == 1 and tl.callbacks[0] is ext.callback
    ext.skip = True
    log: list[str] = []
    tl.extensions.append(Recorder(log))
    tl.fit(num_epochs=5)
    assert tl.epochs_done == 1 and tl.iteration == 4  # nothing trained...
    assert log[-1] == "r.after_fit:1" and not any("on_fit_start" in entry for entry in log)  # ...after_fit ran


def test_a_failed_fit_calls_on_error_last_first_and_raises_the_error() -> None:
    class Boom(Callback):
        def on_batch_end(self) -> None:
            if self.train_loop_obj.iteration == 2:
                raise RuntimeError("boom at 2")

    log: list[str] = []
    tl = _loop(Recorder(log, "a"), Recorder(log, "b"))
    with pytest.raises(RuntimeError, match="boom at 2"):
        tl.fit(num_epochs=1, callbacks=[Boom()])
    assert log[-2:] == ["b.on_error:RuntimeError", "a.on_error:RuntimeError"]
    assert not any("after_fit" in entry for entry in log)


def test_every_after_fit_runs_when_one_fails_and_the_first_error_is_raised() -> None:
    class Failing(LoopExtension):
        def after_fit(self, loop: TrainLoop) -> None:
            raise OSError("disk full")

    log: list[str] = []
    tl = _loop(Recorder(log), Failing())
    with pytest.raises(OSError, match="disk full"):
        tl.fit(num_epochs=1)
    assert log[-1] == "r.after_fit:1"  # attached first, so it finished after the failing one


def test_request_stop_from_a_batch_hook_stops_after_that_batch_with_its_reason() -> None:
    class StopAt(Callback):
        def on_batch_end(self) -> None:
            if self.train_loop_obj.iteration == 3:
                self.train_loop_obj.request_stop("enough at 3")
                self.train_loop_obj.request_stop("a second reason is not kept")

    tl = _loop(batches=8)
    tl.fit(num_epochs=4, callbacks=[StopAt()])
    assert tl.iteration == 3 and tl.epochs_done == 1 and tl.stop_reason == "enough at 3"
    assert tl.state.early_stop and tl.early_stop


def test_the_counters_are_the_loop_state() -> None:
    tl = _loop()
    tl.fit(num_epochs=2)
    assert (tl.epoch, tl.iteration, tl.total_iteration_idx) == (tl.state.epoch, tl.state.iteration, 7)
    tl.epoch = 5  # writes go to the state too
    assert tl.state.epoch == 5 and tl.train_history is tl.state.history
    assert tl.runtime.is_main and tl.distributed is None and tl.runtime.sum([1.5, 2]) == [1.5, 2.0]


def test_something_that_is_not_an_extension_is_refused_at_construction() -> None:
    with pytest.raises(LoopConfigError, match=r"extensions\[0\] is Callback, not a LoopExtension.*fit\(callbacks="):
        _loop(Callback())  # type: ignore[arg-type]


def test_a_stop_set_by_attribute_stops_after_the_epoch_and_keeps_no_invented_reason() -> None:
    class OldStyle(Callback):  # the original AIToolbox way: set the flag
        def on_epoch_end(self) -> None:
            self.train_loop_obj.early_stop = True

    tl = _loop()
    tl.fit(num_epochs=3, callbacks=[OldStyle()])
    assert tl.epochs_done == 1 and tl.early_stop and tl.stop_reason is None


def test_loop_options_is_the_trainloops_keyword_options() -> None:
    """LoopOptions is what classes built on the TrainLoop pass through: the same names and annotations as the
    TrainLoop's keyword options (``extensions`` excepted: such a class builds its own)."""
    import inspect

    from aitoolbox.loop import TrainLoop
    from aitoolbox.loop.extensions import LoopOptions

    params = inspect.signature(TrainLoop.__init__).parameters.values()
    keyword = {p.name: p.annotation for p in params if p.kind is p.KEYWORD_ONLY and p.name != "extensions"}
    options = {name: getattr(hint, "__forward_arg__", hint) for name, hint in LoopOptions.__annotations__.items()}
    assert options == keyword
