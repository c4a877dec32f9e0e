"""In-process exact resume through TrainLoop.state_dict / load_state_dict (the crash tests live in the root tests)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import TinyClassifier, make_classification_data


class Abort(Exception):
    pass


class SnapshotAt(Callback):
    """At global iteration ``at`` (after its step) saves everything a checkpoint would, then aborts training."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.snapshot: dict[str, Any] = {}
        self.seen: list[torch.Tensor] = []

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if tl.iteration == self.at:
            self.snapshot = {
                "loop": copy.deepcopy(tl.state_dict()),
                "model": copy.deepcopy(tl.model.state_dict()),
                "optimizer": copy.deepcopy(tl.optimizer.state_dict()),
                "rng": torch.get_rng_state(),
            }
            raise Abort


def _setup(loader_kwargs: dict[str, Any]) -> tuple[TrainLoop, DataLoader]:
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.3)  # draws from the global RNG: a resume must restore it
    loader = DataLoader(make_classification_data(100), batch_size=8, shuffle=True, **loader_kwargs)
    tl = TrainLoop(model, loader, None, None, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss())
    return tl, loader


class BatchRecorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.first_values: list[float] = []

    def on_batch_end(self) -> None:
        self.first_values.append(self.train_loop_obj.last_loss.item())


@pytest.mark.parametrize(
    "loader_kwargs",
    [{}, {"generator": torch.Generator().manual_seed(5)}, {"num_workers": 2}],
    ids=["global-rng", "loader-generator", "workers"],
)
@pytest.mark.parametrize("at", [13, 26, 30])  # 13 batches per epoch: mid-epoch 1, epoch boundary, mid-epoch 2
def test_mid_epoch_resume_is_exact(loader_kwargs: dict[str, Any], at: int) -> None:
    if "generator" in loader_kwargs:
        loader_kwargs = {"generator": torch.Generator().manual_seed(5)}  # a fresh generator per run
    straight, _ = _setup(loader_kwargs)
    rec_straight = BatchRecorder()
    straight.fit(num_epochs=4, callbacks=[rec_straight])

    if "generator" in loader_kwargs:
        loader_kwargs = {"generator": torch.Generator().manual_seed(5)}
    first, _ = _setup(loader_kwargs)
    snap = SnapshotAt(at)
    with pytest.raises(Abort):
        first.fit(num_epochs=4, callbacks=[snap])
    state = snap.snapshot

    # a fresh process would rebuild everything from scratch; here: new objects, different global RNG state
    if "generator" in loader_kwargs:
        loader_kwargs = {"generator": torch.Generator().manual_seed(999)}
    resumed, _ = _setup(loader_kwargs)
    torch.manual_seed(12345)
    resumed.model.load_state_dict(state["model"])
    resumed.optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["loop"])
    torch.set_rng_state(state["rng"])
    rec_resumed = BatchRecorder()
    resumed.fit(num_epochs=4, callbacks=[rec_resumed])  # after load_state_dict: the run's total

    assert resumed.epochs_done == 4 and resumed.iteration == straight.iteration == 52
    assert rec_resumed.first_values == rec_straight.first_values[at:]  # the same batches, in the same order
    assert resumed.train_history["loss"] == straight.train_history["loss"]  # bit-identical, the partial epoch too
    for p, q in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_inside_an_accumulation_is_refused() -> None:
    tl, _ = _setup({})

    class Peek(Callback):
        def on_batch_end(self) -> None:
            if self.train_loop_obj.iteration == 1:
                self.train_loop_obj.state_dict()

    with pytest.raises(LoopConfigError, match="inside a gradient accumulation"):
        tl.fit(num_epochs=1, grad_accumulation=2, callbacks=[Peek()])


def test_epoch_end_state_points_at_the_next_epoch() -> None:
    tl, _ = _setup({})
    states: list[dict[str, Any]] = []

    class Keep(Callback):
        def on_epoch_end(self) -> None:
            states.append(self.train_loop_obj.state_dict())

    tl.fit(num_epochs=2, callbacks=[Keep()])
    assert [(s["epoch"], s["batch_in_epoch"], s["iteration"]) for s in states] == [(1, 0, 13), (2, 0, 26)]
    assert tl.state_dict()["epoch"] == 2
    assert states[0]["epoch_start_rng"] is None and len(states[1]["history"]["loss"]) == 2


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.inner = make_classification_data(100)
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> Any:
        self.fetched.append(i)
        return self.inner[i]


def test_skipped_batches_are_never_fetched() -> None:
    data = CountingDataset()
    loader = DataLoader(data, batch_size=10, shuffle=True)
    model = TinyClassifier()
    tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    snap = SnapshotAt(7)
    with pytest.raises(Abort):
        tl.fit(num_epochs=1, callbacks=[snap])
    assert len(data.fetched) == 70
    rng_at_start = snap_epoch_rng = tl.state.epoch_start_rng
    assert rng_at_start is not None
    data.fetched.clear()
    tl.load_state_dict(snap.snapshot["loop"])
    torch.set_rng_state(snap.snapshot["rng"])
    tl.fit(num_epochs=1)
    assert len(data.fetched) == 30  # only the last 3 batches of 10 were read
    # and they are the epoch's last 30 indices of the same permutation
    torch.set_rng_state(snap_epoch_rng["torch"])
    full_order = [i for batch in DataLoader(range(100), batch_size=10, shuffle=True) for i in batch.tolist()]
    assert data.fetched == full_order[70:]


def _generator_loader(kind: str, seed: int) -> DataLoader:
    from torch.utils.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler

    data = make_classification_data(100)
    gen = torch.Generator().manual_seed(seed)
    samplers = {
        "loader": None,
        "random": RandomSampler(data, generator=gen),
        "subset": SubsetRandomSampler(range(0, 100, 2), generator=gen),
        "weighted": WeightedRandomSampler(torch.linspace(0.1, 1.0, 100), 100, generator=gen),
    }
    if kind == "loader":
        return DataLoader(data, batch_size=8, shuffle=True, generator=gen)
    return DataLoader(data, batch_size=8, sampler=samplers[kind])


@pytest.mark.parametrize("kind", ["loader", "random", "subset", "weighted"])
def test_epoch_end_state_restores_the_loaders_own_generator(kind: str) -> None:
    def run(loader: DataLoader, state: dict[str, Any] | None = None, epochs: int = 4) -> tuple[TrainLoop, Any]:
        torch.manual_seed(0)
        model = TinyClassifier()
        tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
        keep: list[dict[str, Any]] = []

        class Keep(Callback):
            def on_epoch_end(self) -> None:
                keep.append(
                    copy.deepcopy(self.train_loop_obj.state_dict()) | {"model": copy.deepcopy(model.state_dict())}
                )

        if state is not None:
            model.load_state_dict(state["model"])
            tl.load_state_dict(state)
        tl.fit(num_epochs=epochs, callbacks=[Keep()])
        return tl, keep

    straight, states = run(_generator_loader(kind, 7))
    # a new process builds its loader with the same seed: without the saved state its generator would restart
    resumed, _ = run(_generator_loader(kind, 7), states[1], epochs=4)  # the run's total
    assert resumed.train_history["loss"] == straight.train_history["loss"]
    for p, q in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(p, q)
