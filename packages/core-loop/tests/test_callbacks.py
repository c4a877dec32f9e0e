from __future__ import annotations

import io
import logging
from typing import Any

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop import LoopConfigError, NonFiniteLossError, TrainLoop
from aitoolbox.loop.callbacks import (
    Callback,
    EarlyStopping,
    Every,
    GradNormClip,
    GradValueClip,
    LRSchedulerCallback,
    ProgressBar,
    TerminateOnNaN,
)
from aitoolbox.loop.callbacks._dispatch import CallbackHandler
from aitoolbox.loop.testing import TinyClassifier, make_classification_data, make_classification_loader


def _loop(n: int = 64, batch_size: int = 16, val: bool = True, lr: float = 0.1, **kw: object) -> TrainLoop:
    model = TinyClassifier()
    train = make_classification_loader(n, batch_size=batch_size)
    val_loader = make_classification_loader(32, batch_size=16, seed=9) if val else None
    return TrainLoop(model, train, val_loader, None, optim.SGD(model.parameters(), lr=lr), nn.CrossEntropyLoss(), **kw)


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def on_train_loop_registration(self) -> None:
        self.events.append("registration")

    def on_train_begin(self) -> None:
        self.events.append("train_begin")

    def on_epoch_begin(self) -> None:
        self.events.append("epoch_begin")

    def on_batch_begin(self) -> None:
        self.events.append("batch_begin")

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        self.events.append(f"grad{optimizer_idx}")

    def on_after_optimizer_step(self) -> None:
        self.events.append("step")

    def on_batch_end(self) -> None:
        self.events.append("batch_end")

    def on_epoch_end(self) -> None:
        assert "val_loss" in self.train_loop_obj.train_history  # history is complete when epoch_end runs
        self.events.append("epoch_end")

    def on_train_end(self) -> None:
        self.events.append("train_end")


def test_hooks_run_in_the_documented_order() -> None:
    rec = Recorder()
    _loop(n=32, batch_size=16).fit(num_epochs=1, callbacks=[rec], grad_accumulation=2)
    assert rec.events == [
        "registration",
        "train_begin",
        "epoch_begin",
        "batch_begin",
        "batch_end",
        "batch_begin",
        "grad0",
        "step",
        "batch_end",
        "epoch_end",
        "train_end",
    ]


def test_only_overriding_callbacks_are_dispatched() -> None:
    class EpochOnly(Callback):
        def on_epoch_end(self) -> None:
            pass

    cb, rec = EpochOnly(), Recorder()
    handler = CallbackHandler([cb, rec])
    assert handler.by_hook["on_epoch_end"] == [cb, rec]
    assert handler.by_hook["on_batch_end"] == [rec]
    assert CallbackHandler([cb]).by_hook["on_batch_begin"] == []


def test_execution_order_sorts_callbacks() -> None:
    calls: list[str] = []

    class Named(Callback):
        def on_epoch_end(self) -> None:
            calls.append(self.callback_name)

    _loop().fit(num_epochs=1, callbacks=[Named("late", execution_order=5), Named("early", execution_order=-1)])
    assert calls == ["early", "late"]


def test_wrong_hook_signature_fails_at_registration() -> None:
    class Bad(Callback):
        def on_epoch_end(self, logs) -> None:  # type: ignore[override]
            pass

    with pytest.raises(LoopConfigError, match=r"Bad.on_epoch_end\(logs\) cannot be called as on_epoch_end\(self\)"):
        _loop().fit(num_epochs=1, callbacks=[Bad()])

    class BadGrad(Callback):
        def on_after_gradient_update(self) -> None:  # type: ignore[override]
            pass

    with pytest.raises(LoopConfigError, match=r"change its parameters to \(self, optimizer_idx\)"):
        _loop().fit(num_epochs=1, callbacks=[BadGrad()])


# ------------------------------------------------------------------ EarlyStopping


class ScriptedMetric(Callback):
    """Writes a scripted metric value into the history at each epoch end."""

    def __init__(self, values: list[float], name: str = "val_score") -> None:
        super().__init__(execution_order=-10)
        self.values, self.name = values, name

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        tl.train_history.insert_single_result_into_history(self.name, self.values[tl.epoch])


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    tl = _loop()
    es = EarlyStopping(monitor="val_score", mode="max", patience=2)
    tl.fit(num_epochs=10, callbacks=[ScriptedMetric([0.1, 0.5, 0.4, 0.5, 0.45, 0.9, 1, 1, 1, 1]), es])
    assert (tl.epoch, tl.epochs_done) == (4, 5)  # epochs 2, 3 and 4 did not beat 0.5
    assert (es.best, es.best_epoch, es.stopped_epoch) == (0.5, 1, 4)
    assert tl.early_stop and "val_score did not improve for 3 epochs" in tl.stop_reason


def test_early_stopping_min_delta_and_auto_mode() -> None:
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"
    tl = _loop()
    es = EarlyStopping(monitor="val_score", mode="min", min_delta=0.1, patience=0)
    tl.fit(num_epochs=10, callbacks=[ScriptedMetric([1.0, 0.95, 0.5] + [0.0] * 7), es])
    assert tl.epochs_done == 2 and es.best == 1.0


def test_early_stopping_restores_best_weights() -> None:
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snap(Callback):
        def on_epoch_end(self) -> None:
            tl = self.train_loop_obj
            snapshots[tl.epoch] = {k: v.clone() for k, v in tl.model.state_dict().items()}

    tl = _loop()
    es = EarlyStopping(monitor="val_score", mode="max", patience=1, restore_best_weights=True)
    tl.fit(num_epochs=10, callbacks=[ScriptedMetric([0.1, 0.9, 0.2, 0.3] + [0.0] * 6), Snap(), es])
    assert tl.epochs_done == 4
    for k, v in tl.model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])
    assert not torch.equal(snapshots[1]["net.0.weight"], snapshots[3]["net.0.weight"])


def test_early_stopping_errors() -> None:
    with pytest.raises(LoopConfigError, match="has no validation_loader"):
        _loop(val=False).fit(num_epochs=1, callbacks=[EarlyStopping()])
    tl = _loop()
    with pytest.raises(LoopConfigError, match=r"'val_f1', which nothing in this run puts in the training history"):
        tl.fit(num_epochs=1, callbacks=[EarlyStopping(monitor="val_f1")])
    assert tl.iteration == 0  # refused before the first batch
    # a callback that cannot say what it records: the metric is checked at the first epoch end instead
    with pytest.raises(LoopConfigError, match=r"'val_f1', which is not in the training history \(it has \['loss', "):
        _loop().fit(num_epochs=1, callbacks=[Callback(), EarlyStopping(monitor="val_f1")])
    with pytest.raises(LoopConfigError, match="mode must be 'min', 'max' or 'auto'"):
        EarlyStopping(mode="lower")
    with pytest.raises(LoopConfigError, match="patience must be an int >= 0"):
        EarlyStopping(patience=-1)


def test_early_stopping_state_round_trip() -> None:
    tl = _loop()
    es = EarlyStopping(monitor="val_score", mode="max", patience=5)
    tl.fit(num_epochs=3, callbacks=[ScriptedMetric([0.3, 0.2, 0.1]), es])
    fresh = EarlyStopping(monitor="val_score", mode="max", patience=5)
    fresh.load_state_dict(es.state_dict())
    assert (fresh.best, fresh.best_epoch, fresh.wait) == (0.3, 0, 2)


# ------------------------------------------------------------------ TerminateOnNaN


def _nan_loader(bad_row: int) -> DataLoader:
    x, y = make_classification_data(64).tensors
    x = x.clone()
    x[bad_row] = float("nan")
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_terminate_on_nan_stops_at_the_first_bad_iteration(caplog: pytest.LogCaptureFixture) -> None:
    model = TinyClassifier()
    tl = TrainLoop(model, _nan_loader(42), None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    with caplog.at_level(logging.ERROR, logger="aitoolbox.loop"):
        tl.fit(num_epochs=3, callbacks=[TerminateOnNaN()])
    # row 42 is in batch 5 (0-based) of epoch 0
    assert tl.stop_reason == "non-finite loss nan in epoch 0 at iteration 5"
    assert tl.iteration == 6 and tl.epochs_done == 1
    assert "at iteration 5; stopping training" in caplog.text


def test_terminate_on_nan_windowed_check_still_names_the_iteration() -> None:
    model = TinyClassifier()
    tl = TrainLoop(model, _nan_loader(42), None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    cb = TerminateOnNaN(check_every=4, raise_error=True)
    # force the device-buffer path on CPU to exercise it
    cb.on_train_begin = lambda: (setattr(cb, "_k", 4), setattr(cb, "_buf", torch.empty(4)), setattr(cb, "_filled", 0))
    with pytest.raises(NonFiniteLossError, match="in epoch 0 at iteration 5") as info:
        tl.fit(num_epochs=3, callbacks=[cb])
    assert (info.value.epoch, info.value.iteration) == (0, 5)
    assert tl.iteration == 8  # checked after the window of 4 filled


# ------------------------------------------------------------------ LR schedulers


def test_epoch_scheduler_steps_once_per_epoch() -> None:
    tl = _loop()
    sched = torch.optim.lr_scheduler.StepLR(tl.optimizer, step_size=1, gamma=0.5)
    tl.fit(num_epochs=3, callbacks=[LRSchedulerCallback(sched)])
    assert tl.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_iteration_scheduler_steps_after_every_optimizer_step() -> None:
    tl = _loop(n=64, batch_size=16)  # 4 batches, accumulation 2 -> 2 steps per epoch
    cb = LRSchedulerCallback(lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), step_every="iteration")
    tl.fit(num_epochs=2, callbacks=[cb], grad_accumulation=2)
    assert tl.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_reduce_on_plateau_uses_the_monitored_metric() -> None:
    tl = _loop()
    cb = LRSchedulerCallback(
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.1),
        monitor="val_score",
    )
    tl.fit(num_epochs=3, callbacks=[ScriptedMetric([0.5, 0.4, 0.3]), cb])
    assert tl.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**2)


def test_scheduler_errors() -> None:
    with pytest.raises(LoopConfigError, match="step_every must be 'epoch' or 'iteration'"):
        LRSchedulerCallback(lambda o: None, step_every="batch")
    with pytest.raises(LoopConfigError, match="scheduler must be a torch.optim.lr_scheduler instance"):
        LRSchedulerCallback(3)
    plateau = lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o)  # noqa: E731
    with pytest.raises(LoopConfigError, match="use step_every='epoch'"):
        _loop().fit(num_epochs=1, callbacks=[LRSchedulerCallback(plateau, step_every="iteration")])
    with pytest.raises(LoopConfigError, match="no validation_loader; pass one or set monitor='loss'"):
        _loop(val=False).fit(num_epochs=1, callbacks=[LRSchedulerCallback(plateau)])


# ------------------------------------------------------------------ gradient clipping


class GradProbe(Callback):
    """Records the gradient norms / max after the clipping callbacks ran."""

    def __init__(self) -> None:
        super().__init__(execution_order=100)
        self.norms: list[float] = []
        self.maxes: list[float] = []

    def on_after_gradient_update(self, optimizer_idx: int) -> None:
        grads = [p.grad for p in self.train_loop_obj.model.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        self.maxes.append(max(g.abs().max().item() for g in grads))


def test_grad_norm_clip_bounds_the_total_norm() -> None:
    probe_free, probe = GradProbe(), GradProbe()
    _loop(lr=0.5).fit(num_epochs=1, callbacks=[probe_free])
    assert max(probe_free.norms) > 0.05  # clipping below this actually changes something
    _loop(lr=0.5).fit(num_epochs=1, callbacks=[GradNormClip(max_norm=0.05), probe])
    assert max(probe.norms) <= 0.05 + 1e-6


def test_grad_value_clip_bounds_each_element() -> None:
    probe = GradProbe()
    _loop(lr=0.5).fit(num_epochs=1, callbacks=[GradValueClip(clip_value=0.01), probe])
    assert max(probe.maxes) <= 0.01 + 1e-7
    with pytest.raises(LoopConfigError, match="clip_value must be a number > 0"):
        GradValueClip(0)
    with pytest.raises(LoopConfigError, match="max_norm must be a number > 0"):
        GradNormClip(-1)


# ------------------------------------------------------------------ progress bar


def test_progress_bar_draws_one_line_per_epoch_with_loss_and_val_loss() -> None:
    out = io.StringIO()
    tl = _loop(progress_bar=False)
    tl.fit(num_epochs=2, callbacks=[ProgressBar(file=out)])
    lines = [line for line in out.getvalue().replace("\r", "\n").split("\n") if line.strip()]
    finals = [line for line in lines if "val_loss=" in line]
    last = {
        line.split()[1].rstrip(":"): line for line in finals
    }  # each epoch's last draw (tqdm may redraw on its own timer)
    assert list(last) == ["1/2", "2/2"] and all(line.startswith("epoch ") for line in finals)
    assert f"loss={tl.train_history['loss'][1]:.4f}" in last["2/2"]
    assert "4/4" in last["2/2"] and "batch/s" in last["2/2"]


def test_progress_bar_refreshes_the_running_loss_mid_epoch() -> None:
    out = io.StringIO()
    tl = _loop(n=512, batch_size=4, progress_bar=False)
    tl.fit(num_epochs=1, callbacks=[ProgressBar(file=out, refresh_s=1e-6)])
    updates = out.getvalue().split("\r")
    assert sum("loss=" in u and "val_loss=" not in u for u in updates) >= 2  # running loss shown before the end


def test_progress_bar_is_off_when_stderr_is_not_a_terminal() -> None:
    tl = _loop()  # pytest captures stderr: not a TTY
    tl.fit(num_epochs=1)
    assert not any(isinstance(cb, ProgressBar) for cb in tl.callbacks)
    tl = _loop(progress_bar=True)
    tl.fit(num_epochs=1)
    assert any(isinstance(cb, ProgressBar) for cb in tl.callbacks)


def test_callback_states_are_keyed_by_identity_not_order() -> None:
    from aitoolbox.loop.callbacks.base import callback_states, load_callback_states

    a, b = EarlyStopping(monitor="val_loss"), EarlyStopping(monitor="loss")
    a.best, b.best = 1.0, 2.0
    states = callback_states([a, b])
    assert sorted(states) == ["EarlyStopping(loss)", "EarlyStopping(val_loss)"]
    c, d = EarlyStopping(monitor="loss"), EarlyStopping(monitor="val_loss")
    assert load_callback_states([c, d], states) == [] and (c.best, d.best) == (2.0, 1.0)
    # a checkpoint written before the keys: one callback of the name takes its state, several take none
    legacy = {"EarlyStopping": a.state_dict()}
    single = EarlyStopping(monitor="val_loss")
    assert load_callback_states([single], legacy) == [] and single.best == 1.0
    pair = [EarlyStopping(monitor="val_loss"), EarlyStopping(monitor="loss")]
    assert load_callback_states(pair, {**legacy, "EarlyStopping#2": b.state_dict()}) == [
        "EarlyStopping",
        "EarlyStopping#2",
    ]
    with pytest.raises(LoopConfigError, match="state_key must be a non-empty string"):
        single.state_key = ""


NO_TERMINAL = """
import logging, sys
from torch import nn, optim
from aitoolbox.loop import TrainLoop
from aitoolbox.loop.callbacks import ProgressLog
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader

if sys.argv[1] == "configured":
    logging.basicConfig(level=logging.WARNING)  # the program's own choice: INFO stays hidden
m = TinyClassifier()
tl = TrainLoop(m, make_classification_loader(256, batch_size=8), make_classification_loader(32), None,
               optim.SGD(m.parameters(), 0.1), nn.CrossEntropyLoss(), device="cpu")
callbacks = [ProgressLog(every_s=1e-9)] if sys.argv[1] == "often" else []
tl.fit(num_epochs=2, callbacks=callbacks)
print(repr(tl.train_history["val_loss"][1]))
"""


def _no_terminal(mode: str) -> tuple[str, str]:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", NO_TERMINAL, mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr  # stderr is a pipe here: not a terminal, as under nohup, SLURM or CI


def test_without_a_terminal_each_epoch_is_a_log_line() -> None:
    out, err = _no_terminal("plain")
    lines = [line for line in err.splitlines() if ": loss " in line]
    assert [line.split()[2] for line in lines] == ["1/2:", "2/2:"]  # one line per epoch, no bar
    assert f"val_loss {float(out):.4f}" in lines[1] and "batch/s" not in err
    assert "\r" not in err


def test_without_a_terminal_long_epochs_log_their_progress() -> None:
    _, err = _no_terminal("often")
    running = [line for line in err.splitlines() if " batches, loss " in line]
    assert running and all("/32 batches, loss " in line and line.endswith("batch/s") for line in running)


def test_a_program_that_configured_logging_decides_what_shows() -> None:
    _, err = _no_terminal("configured")
    assert ": loss " not in err  # its root handler at WARNING: the loop adds none of its own


def test_every_is_applied_by_the_dispatcher_to_the_hooks_it_names() -> None:
    class Count(Callback):
        def __init__(self, schedule: Every | None) -> None:
            super().__init__()
            self.hook_schedule = schedule
            self.batches: list[int] = []
            self.epochs: list[int] = []

        def on_batch_end(self) -> None:
            self.batches.append(self.train_loop_obj.iteration)

        def on_epoch_end(self) -> None:
            self.epochs.append(self.train_loop_obj.epoch)

    by_step, by_epoch, first = Count(Every(4, "step")), Count(Every(2, "epoch")), Count(Every(5, "step", start=1))
    model = TinyClassifier()
    loader, opt = make_classification_loader(48, batch_size=8), torch.optim.SGD(model.parameters(), lr=0.1)
    tl = TrainLoop(model, loader, None, None, opt, nn.CrossEntropyLoss())
    tl.fit(num_epochs=3, callbacks=[by_step, by_epoch, first])  # 6 batches an epoch, 18 in all
    assert by_step.batches == [4, 8, 12, 16] and by_step.epochs == [0, 1, 2]  # on_epoch_end is not scheduled
    assert by_epoch.epochs == [1] and len(by_epoch.batches) == 18  # after the 2nd epoch (0-based index 1)
    assert first.batches == [1, 6, 11, 16]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Every(0), r"n must be an int >= 1, got 0"),
        (lambda: Every(2, "batch"), r"unit=\.\.\.\) must be 'step' or 'epoch', got 'batch'"),  # type: ignore[arg-type]
        (lambda: Every(2, start=0), r"start=\.\.\.\) must be an int >= 1, got 0"),
    ],
)
def test_a_bad_schedule_is_refused(make: Any, message: str) -> None:
    with pytest.raises(LoopConfigError, match=message):
        make()


def test_a_hook_schedule_that_is_not_every_is_refused_when_fit_starts() -> None:
    cb = Callback()
    cb.hook_schedule = 10  # type: ignore[assignment]
    model = TinyClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tl = TrainLoop(model, make_classification_loader(16), None, None, opt, nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match=r"callbacks\[0\] \(Callback\)\.hook_schedule must be None or an Every"):
        tl.fit(num_epochs=1, callbacks=[cb])
