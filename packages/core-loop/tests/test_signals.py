"""Preemption in one process: real signals to this process stop a plain TrainLoop at an optimizer-step boundary with a
catchable ``Preempted``; the options are checked; handlers are chained and restored; workers ignore the signals."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.extensions import LoopExtension
from aitoolbox.loop.preemption import IgnoreSignals, Preempted, Preemption, PreemptionWatch, launcher_grace_s
from aitoolbox.loop.testing import TinyClassifier, make_classification_data, make_classification_loader


class SignalAt(Callback):
    """Sends ``signum`` to this process after iteration ``at`` (``times`` times); records the handler in force."""

    def __init__(self, at: int, signum: int = signal.SIGTERM, times: int = 1, workers: bool = False) -> None:
        super().__init__("signal")
        self.at, self.signum, self.times, self.workers = at, signum, times, workers
        self.handler_during_fit: Any = None

    def on_train_begin(self) -> None:
        self.handler_during_fit = signal.getsignal(signal.SIGTERM)

    def on_batch_end(self) -> None:
        if self.train_loop_obj.iteration == self.at:
            if self.workers:  # the DataLoader workers first (they are this process's multiprocessing children)
                children = multiprocessing.active_children()
                assert children
                for child in children:
                    os.kill(child.pid, self.signum)  # type: ignore[arg-type]
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


class Saw(LoopExtension):
    def __init__(self) -> None:
        self.preempted: list[Preempted] = []
        self.errors: list[BaseException] = []

    def on_preempt(self, loop: TrainLoop, preempted: Preempted) -> None:
        self.preempted.append(preempted)

    def on_error(self, loop: TrainLoop, error: BaseException) -> None:
        self.errors.append(error)


def _loop(preemption: Any = None, loader: Any = None, **kwargs: Any) -> TrainLoop:
    model = TinyClassifier()
    return TrainLoop(
        model,
        loader or make_classification_loader(64, batch_size=8, shuffle=True),
        None,
        None,
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        device="cpu",
        preemption=preemption,
        **kwargs,
    )


def test_sigterm_stops_at_the_next_step_and_raises_a_catchable_preempted() -> None:
    saw = Saw()
    tl = _loop(True, extensions=[saw])
    before = signal.getsignal(signal.SIGTERM)
    cb = SignalAt(11)
    with pytest.raises(Preempted) as caught:
        tl.fit(num_epochs=3, callbacks=[cb])
    err = caught.value
    assert isinstance(err, SystemExit) and err.code == 143
    assert (err.signal, err.epoch, err.iteration) == ("SIGTERM", 1, 11) and tl.iteration == 11
    assert "training preempted by SIGTERM at epoch 1, iteration 11; exit code 143" == str(err)
    assert 0 < err.remaining_s() <= 25.0 and err.checkpoint is None and err.durable is None
    assert saw.preempted == [err] and saw.errors == []  # on_preempt, not on_error
    assert cb.handler_during_fit is not before and signal.getsignal(signal.SIGTERM) is before  # restored
    assert not tl.state.epoch_complete and tl.batch_in_epoch == 3  # stopped inside epoch 1, after its 3rd batch


def test_off_by_default_in_the_plain_loop() -> None:
    tl = _loop()
    cb = SignalAt(-1)
    before = signal.getsignal(signal.SIGTERM)
    tl.fit(num_epochs=1, callbacks=[cb])
    assert tl.preemption is None and cb.handler_during_fit is before


def test_inside_a_gradient_accumulation_it_stops_at_the_optimizer_step() -> None:
    tl = _loop(True)
    with pytest.raises(Preempted) as caught:
        tl.fit(num_epochs=2, callbacks=[SignalAt(4)], grad_accumulation=3)
    assert caught.value.iteration == 6  # batches 5 and 6 complete the step begun at batch 4
    assert tl.state_dict()["batch_in_epoch"] == 6  # a resumable position (after an optimizer step)


def test_a_signal_after_the_last_step_still_counts() -> None:
    """The last epoch's end work (evaluation, callbacks) is where a signal came: the rerun does what follows."""

    class AtTheEnd(Callback):
        def on_epoch_end(self) -> None:
            if self.train_loop_obj.epoch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    tl = _loop(True)
    with pytest.raises(Preempted) as caught:
        tl.fit(num_epochs=2, callbacks=[AtTheEnd()])
    assert caught.value.iteration == 16 and tl.epochs_done == 2


def test_custom_signal_and_exit_code_and_the_previous_handler_is_chained() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        tl = _loop(Preemption(signals=["SIGUSR1"], exit_code=75))
        with pytest.raises(Preempted) as caught:
            tl.fit(num_epochs=2, callbacks=[SignalAt(3, signal.SIGUSR1)])
        assert caught.value.code == 75 and caught.value.signal == "SIGUSR1" and caught.value.iteration == 3
        assert calls == [signal.SIGUSR1]  # the handler installed before still ran
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not in the list: untouched
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_second_signal_halves_the_budget_left() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    watch = PreemptionWatch(Preemption(grace_s=100, margin_s=0, signals=["SIGUSR2"]))
    assert watch.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        first = watch.remaining_s()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert watch.requested and watch.count == 2 and 95 < first <= 100 and 45 < watch.remaining_s() <= 50
    finally:
        watch.restore()
    assert signal.getsignal(signal.SIGUSR2) is before


def test_ctrl_c_is_a_preemption_not_a_keyboard_interrupt() -> None:
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when launched in the background
    with pytest.raises(Preempted) as caught:
        _loop(True).fit(num_epochs=2, callbacks=[SignalAt(2, signal.SIGINT)])
    assert caught.value.signal == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before  # what was installed before fit, restored


HUNG = """
import sys, time
from torch import nn, optim
from aitoolbox.loop import TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader

class Hang(Callback):
    def on_batch_end(self):
        if self.train_loop_obj.iteration == 2:
            print("hung", flush=True)
            while True:  # a step that never returns (a deadlocked collective, a stuck read...)
                time.sleep(0.05)

m = TinyClassifier()
tl = TrainLoop(m, make_classification_loader(64), None, None, optim.SGD(m.parameters(), 0.1), nn.CrossEntropyLoss(),
               device="cpu", preemption=True)
tl.fit(num_epochs=2, callbacks=[Hang()])
"""


def test_a_second_ctrl_c_interrupts_a_hung_step_after_saying_so() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HUNG], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "hung\n"
        proc.send_signal(signal.SIGINT)  # recorded as a preemption: the hung step never reaches its boundary
        assert proc.stderr is not None
        said = "Ctrl-C: stopping at the next optimizer step and saving; Ctrl-C again to interrupt now"
        for line in proc.stderr:  # after whatever else the child wrote first (e.g. torch's warnings)
            if said in line:
                break
        else:
            raise AssertionError(f"the child never said {said!r}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed check must not leave the hung child behind (nor wait for it)
            proc.kill()
            proc.communicate()
    assert "Ctrl-C again: interrupting now (KeyboardInterrupt)" in err and "KeyboardInterrupt" in err.splitlines()[-1]
    assert proc.returncode in (-signal.SIGINT, 130, 1)


_USER_INIT = torch.manual_seed  # the user's worker_init_fn (importable by spawned workers)


def test_dataloader_workers_ignore_the_signals_and_keep_the_users_init() -> None:
    # spawned workers start with the default handlers (forked ones inherit the loop's, which ignores them there)
    user_loader = DataLoader(
        make_classification_data(32),
        batch_size=8,
        num_workers=2,
        worker_init_fn=_USER_INIT,
        multiprocessing_context="spawn",
        persistent_workers=True,
    )
    tl = _loop(True, loader=user_loader)
    derived = tl.loaders.train(user_loader)
    assert derived is not user_loader and user_loader.worker_init_fn is _USER_INIT  # the user's is untouched
    init = derived.worker_init_fn  # type: ignore[attr-defined]
    assert isinstance(init, IgnoreSignals) and init.inner is _USER_INIT
    assert set(init.signals) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGINT}
    # workers and the main process get it (Ctrl-C, SLURM): workers ignore it, the loop stops, no worker error
    with pytest.raises(Preempted):
        tl.fit(num_epochs=3, callbacks=[SignalAt(2, signal.SIGINT, workers=True)])
    assert _loop(False, loader=user_loader, fast_collate=False).loaders.train(user_loader) is user_loader


def test_outside_the_main_thread_it_warns_and_trains(caplog: pytest.LogCaptureFixture) -> None:
    tl = _loop(True)
    with caplog.at_level(logging.WARNING):
        thread = threading.Thread(target=tl.fit, kwargs={"num_epochs": 1})
        thread.start()
        thread.join()
    assert "outside the main thread: preemption signals are not handled" in caplog.text and tl.epochs_done == 1


def test_the_budget_follows_torchruns_shutdown_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert launcher_grace_s() is None or "TORCHELASTIC_RUN_ID" in os.environ
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "12")
    assert launcher_grace_s() == 12.0
    assert Preemption(grace_s=120, margin_s=5).budget_s() == 7.0
    assert Preemption(grace_s=10, margin_s=5).budget_s() == 5.0
    with caplog.at_level(logging.WARNING):
        _loop(Preemption(grace_s=120)).fit(num_epochs=1)
    assert "grace_s=120 but the launcher kills 12 s after its SIGTERM" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"signals": ["SIGKILL"]}, "SIGKILL cannot be caught"),
        ({"signals": ["SIGNOPE"]}, "names like 'SIGTERM'"),
        ({"signals": []}, "at least one signal"),
        ({"exit_code": 256}, "from 0 to 255"),
        ({"exit_code": "143"}, "exit_code"),
        ({"grace_s": -1}, "grace_s=...\\) must be a number of seconds"),
        ({"grace_s": 5, "margin_s": 5}, "margin_s \\(5\\) must be smaller than grace_s"),
        ({"check_every": 0}, "check_every"),
    ],
)
def test_bad_options_are_refused_with_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LoopConfigError, match=message):
        Preemption(**kwargs)


def test_the_option_itself_is_checked() -> None:
    with pytest.raises(LoopConfigError, match="preemption must be a Preemption, True, False or None"):
        _loop("yes")
    assert Preemption.resolve(None, True) is not None and Preemption.resolve(None, False) is None
    assert "SIGTERM" in repr(Preemption())


_EXIT_SCRIPT = """
import sys
from torch import nn, optim
from torch.utils.data import DataLoader
from aitoolbox.loop import TrainLoop
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
loader = DataLoader(make_classification_data(32), batch_size=8, num_workers=2, persistent_workers=True,
                    multiprocessing_context=sys.argv[1])
model = TinyClassifier()
tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
               device="cpu", preemption=True, fast_collate=False)
tl.fit(num_epochs=1)
print("trained", flush=True)
"""  # the loop (and its persistent workers) alive until the interpreter exits


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_program_with_persistent_workers_still_exits(context: str) -> None:
    """Workers ignore SIGTERM from others, not from their parent: multiprocessing's exit handler terminates them
    with SIGTERM, and a worker that ignored it would hang the program's exit."""
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, context], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-3000:]
