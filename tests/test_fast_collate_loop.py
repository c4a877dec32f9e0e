"""TrainLoop with fastcollate: the same training as with default_collate, the user's loaders untouched."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

import fastcollate
from aitoolbox.loop._loaders import lenient_fast_collate
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import TrainLoop


class _Images(Dataset[tuple[torch.Tensor, int]]):
    """Image-sized samples (48 KiB each), so batches take fastcollate's Rust copy path."""

    def __init__(self, n: int) -> None:
        base = make_classification_data(n, n_features=8)
        self.x, self.y = base.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i].repeat(1536), int(self.y[i])


class _Wide(TinyClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.view(x.shape[0], 1536, 8).mean(1))


def _train(fast: bool, num_workers: int) -> tuple[TrainLoop, DataLoader]:
    torch.manual_seed(0)
    loader = DataLoader(_Images(192), batch_size=32, shuffle=True, num_workers=num_workers)
    model = _Wide()
    tl = TrainLoop(
        model,
        loader,
        loader,
        None,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        nn.CrossEntropyLoss(),
        fast_collate=fast,
    )
    tl.fit(num_epochs=2)
    return tl, loader


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_with_fast_collate_equals_default_collate(num_workers: int) -> None:
    fast, fast_loader = _train(True, num_workers)
    slow, _ = _train(False, num_workers)
    assert fast_loader.collate_fn is default_collate, "the user's loader is never modified"
    derived = fast.loaders.evaluation("train_loader", fast.train_loader)[0]
    assert derived.collate_fn is lenient_fast_collate
    assert isinstance(derived, fastcollate.SlotDataLoader) == (num_workers > 0)
    for a, b in zip(fast.model.parameters(), slow.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fast.train_history["val_loss"] == slow.train_history["val_loss"]
    y_fast = fast.predict_on_validation_set()
    y_slow = slow.predict_on_validation_set()
    assert torch.equal(torch.as_tensor(y_fast[0]), torch.as_tensor(y_slow[0]))


def test_training_batches_ride_in_slots_when_workers_collate(monkeypatch: pytest.MonkeyPatch) -> None:
    """With workers, the batches the loop trains on are views of the slot arena (no segment per batch); a
    DataLoader subclass keeps its own iterators and gets fastcollate's collation only."""
    from fastcollate import _arena

    seen: list[bool] = []
    arenas: set[str] = set()
    original = _Wide.forward

    def forward(self: _Wide, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(_arena.slot_of(x) is not None)
        arenas.update(_arena._arenas)
        return original(self, x)

    monkeypatch.setattr(_Wide, "forward", forward)
    tl, _ = _train(True, 2)
    # 6 batches an epoch, every one in a slot: the first sized from its samples, later epochs' new workers (not
    # persistent) reuse the slots of the first
    assert seen == [True] * 12, seen
    # one arena for the training loader and one for the validation loader, kept through both epochs and the
    # switches between training and evaluation, released when the fit ended
    assert len(arenas) == 2 and not arenas & set(_arena._arenas), arenas
    assert not [f for f in os.listdir(_arena.shm_dir()) if f.startswith(f"{_arena.NAME}.{os.getpid()}.")]
    tl.evaluate_loss_on_validation_set()  # outside a fit: slots for the call's duration
    assert not arenas & set(_arena._arenas) and len(set(_arena._arenas)) == 0

    class Mine(DataLoader):  # type: ignore[type-arg]
        pass

    mine, model = Mine(_Images(8), num_workers=1), _Wide()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tl = TrainLoop(model, mine, None, None, opt, nn.CrossEntropyLoss(), fast_collate=True)
    derived = tl.loaders.train(mine)
    assert type(derived) is Mine and derived.collate_fn is lenient_fast_collate


def test_a_custom_collate_fn_is_left_alone() -> None:
    def mine(batch: list[object]) -> object:
        return default_collate(batch)

    data = make_classification_data(32)
    loader = DataLoader(data, batch_size=8, collate_fn=mine)
    model = TinyClassifier()
    tl = TrainLoop(
        model, loader, None, None, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), fast_collate=True
    )
    assert tl.loaders.evaluation("train_loader", tl.train_loader)[0].collate_fn is mine


class _SometimesFloat64(Dataset[tuple[torch.Tensor, int]]):
    """Rows that are float32, except every 7th, which is float64: default_collate promotes the batch to float64."""

    def __init__(self) -> None:
        self.x, self.y = make_classification_data(64).tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.x[i].double() if i % 7 == 3 else self.x[i]
        return x, int(self.y[i])


class _AnyDtype(TinyClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


def test_what_default_collate_accepts_trains_with_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = fastcollate.collate

    def spy(batch: list[object]) -> object:
        calls.append(len(batch))
        return real(batch)

    with pytest.raises(fastcollate.CollateDtypeError):  # called directly, fastcollate stays strict
        real([_SometimesFloat64()[i] for i in range(8)])
    monkeypatch.setattr(fastcollate, "collate", spy)
    runs = []
    for fast in (None, False):  # None: the default, fastcollate when installed
        torch.manual_seed(0)
        model = _AnyDtype()
        loader = DataLoader(_SometimesFloat64(), batch_size=8, shuffle=True)
        tl = TrainLoop(
            model,
            loader,
            None,
            None,
            torch.optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            device="cpu",
            fast_collate=fast,
        )
        tl.fit(num_epochs=2)
        runs.append(tl)
    assert len(calls) == 16  # fastcollate saw every batch of the default run, and declined the mixed ones
    assert runs[0].train_history["loss"] == runs[1].train_history["loss"]
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_persistent_workers_of_a_freed_loop_exit_by_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's derived loader keeps persistent workers. Freed with the loop by the cyclic collector (a TrainLoop
    holds reference cycles), torch's iterator would find its index queues finalized first: the workers never get
    the message to stop, and each is terminated after a 5 s wait. The loop shuts them down itself."""
    import gc
    import multiprocessing.process

    terminated: list[int | None] = []
    terminate = multiprocessing.process.BaseProcess.terminate

    def spy(process: multiprocessing.process.BaseProcess) -> None:
        terminated.append(process.pid)
        terminate(process)

    torch.manual_seed(0)
    loader = DataLoader(_Images(64), batch_size=16, num_workers=2, persistent_workers=True)
    model = _Wide()
    tl = TrainLoop(model, loader, None, None, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    tl.fit(num_epochs=1)
    derived = tl.loaders.train(loader)
    assert derived is not loader and derived._iterator is not None
    workers = list(derived._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", spy)
    del tl, derived
    gc.collect()
    for w in workers:
        w.join(timeout=120)
    assert terminated == [] and [w.exitcode for w in workers] == [0] * len(workers)
