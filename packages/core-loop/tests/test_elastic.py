"""ElasticSampler and the data-order log in one process (the world-size changes run under torchrun in the root
tests): the shares of each global batch, its options, the log's chain, and resumes with another accumulation."""

from __future__ import annotations

import copy
import hashlib
import logging
import struct
from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.loop import ElasticSampler, LoopConfigError, ResumeMismatchError, TrainLoop
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.testing import TinyClassifier, make_classification_data


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_ranks_micro_batches_partition_each_global_batch(world: int, accumulation: int) -> None:
    s = ElasticSampler(100, global_batch_size=16, seed=3)
    s.set_epoch(2)
    shards = [list(s.shard(r, world, accumulation)) for r in range(world)]
    assert all(len(shard) == s.steps * accumulation for shard in shards)
    for step in range(s.steps):
        mine = [
            i for shard in shards for micro in shard[step * accumulation : (step + 1) * accumulation] for i in micro
        ]
        assert sorted(mine) == sorted(s.global_batch(step).tolist())  # the same samples whatever the split


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    a, b = ElasticSampler(50, global_batch_size=10, seed=1), ElasticSampler(50, global_batch_size=10, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert sorted(i for batch in b for i in batch) == list(range(50))  # a permutation of the epoch


def test_drop_last_and_filling_up_the_last_global_batch() -> None:
    kept = ElasticSampler(10, global_batch_size=4, shuffle=False, drop_last=True)
    assert list(kept) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    filled = ElasticSampler(10, global_batch_size=4, shuffle=False)
    assert list(filled)[-1] == [8, 9, 0, 1]


def test_weights_draw_from_the_given_distribution() -> None:
    weights = [0.0] * 5 + [1.0] * 5
    s = ElasticSampler(10, global_batch_size=4, weights=weights, num_samples=40, seed=0)
    drawn = Counter(i for batch in s for i in batch)
    assert set(drawn) <= set(range(5, 10)) and sum(drawn.values()) == 40


def test_bad_options_are_refused_with_what_to_change() -> None:
    with pytest.raises(LoopConfigError, match="global_batch_size must be a positive int"):
        ElasticSampler(10, global_batch_size=0)
    with pytest.raises(LoopConfigError, match="no full global batch"):
        ElasticSampler(3, global_batch_size=4, drop_last=True)
    with pytest.raises(LoopConfigError, match="one value per sample"):
        ElasticSampler(10, global_batch_size=2, weights=[1.0, 2.0])
    with pytest.raises(LoopConfigError, match="2 x 3 = 6"):
        ElasticSampler(10, global_batch_size=16).shard(0, 2, 3)


class Snap(Callback):
    """Saves model, optimizer and loop state after global step ``at`` and stops there."""

    def __init__(self, at: int) -> None:
        super().__init__("snap")
        self.at = at
        self.saved: dict[str, Any] = {}

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if tl.batch_in_epoch % tl.grad_accumulation == 0 and tl.iteration // tl.grad_accumulation == self.at:
            self.saved = {
                "model": copy.deepcopy(tl.model.state_dict()),
                "optimizer": copy.deepcopy(tl.optimizer.state_dict()),
                "loop": tl.state_dict(),
            }
            tl.request_stop("snapshot taken")


def _loop(workers: int = 0, global_batch: int = 32, **sampler: Any) -> TrainLoop:
    torch.manual_seed(0)
    data = make_classification_data(200, seed=1)
    batches = ElasticSampler(data, global_batch_size=global_batch, seed=5, **sampler)
    loader = DataLoader(data, batch_sampler=batches, num_workers=workers)
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return TrainLoop(model, loader, None, None, optimizer, nn.CrossEntropyLoss(), device="cpu", progress_bar=False)


def _diff(a: TrainLoop, b: TrainLoop) -> float:
    return max(
        float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )


def test_accumulation_splits_the_same_global_batches() -> None:
    one, four = _loop(), _loop()
    one.fit(num_epochs=2)
    four.fit(num_epochs=2, grad_accumulation=4)
    assert _diff(one, four) <= 1e-6
    assert one.state.order_log.state_dict() == four.state.order_log.state_dict()
    assert one.state.order_log.steps == 2 * 7  # ceil(200 / 32) global steps per epoch


@pytest.mark.parametrize("sampler", [{}, {"drop_last": True}, {"weights": [1.0, 3.0] * 100}], ids=str)
def test_a_mid_epoch_resume_with_another_accumulation_matches_the_uninterrupted_run(sampler: dict[str, Any]) -> None:
    whole = _loop(**sampler)
    whole.fit(num_epochs=2, grad_accumulation=2)
    first, snap = _loop(**sampler), Snap(at=9)  # the 3rd global step of epoch 1 (6 or 7 per epoch)
    first.fit(num_epochs=2, grad_accumulation=2, callbacks=[snap])
    assert snap.saved["loop"]["batch_in_epoch"] > 0
    resumed = _loop(**sampler)
    resumed.model.load_state_dict(snap.saved["model"])
    resumed.optimizer.load_state_dict(snap.saved["optimizer"])
    resumed.load_state_dict(snap.saved["loop"])
    resumed.fit(num_epochs=2, grad_accumulation=4)
    assert _diff(whole, resumed) <= 1e-6
    assert resumed.state.order_log.state_dict() == whole.state.order_log.state_dict()


def test_dataloader_workers_train_the_same_steps() -> None:
    main, workers = _loop(), _loop(workers=2)
    main.fit(num_epochs=1, grad_accumulation=2)
    workers.fit(num_epochs=1, grad_accumulation=2)
    assert _diff(main, workers) == 0.0
    assert main.state.order_log.state_dict() == workers.state.order_log.state_dict()


def test_an_accumulation_that_does_not_divide_the_global_batch_is_refused_before_training() -> None:
    tl = _loop(global_batch=30)
    with pytest.raises(LoopConfigError, match="grad_accumulation=4"):
        tl.fit(num_epochs=1, grad_accumulation=4)
    assert tl.iteration == 0


def test_the_log_is_a_sha256_chain_of_each_steps_global_indices() -> None:
    tl = _loop()
    tl.fit(num_epochs=1)
    s = tl.train_loader.batch_sampler
    chain = bytes(32)
    for step in range(s.steps):
        packed = struct.pack(f"<{s.global_batch_size}q", *s.global_batch(step).tolist())  # little-endian int64
        chain = hashlib.sha256(chain + packed).digest()
    assert tl.state.order_log.marks == [], "marks are kept only for an experiment folder"
    assert tl.state_dict()["data_order"] == {"steps": s.steps, "sha256": chain.hex()}


def test_a_changed_global_batch_is_refused_for_a_mid_epoch_resume() -> None:
    first, snap = _loop(), Snap(at=3)
    first.fit(num_epochs=1, callbacks=[snap])
    other = _loop(global_batch=16)
    other.load_state_dict(snap.saved["loop"])
    with pytest.raises(ResumeMismatchError, match="batch size 32 -> 16"):
        other.fit(num_epochs=1)


def test_log_order_false_turns_the_log_off(caplog: pytest.LogCaptureFixture) -> None:
    tl = _loop(log_order=False)
    with caplog.at_level(logging.WARNING):
        tl.fit(num_epochs=1)
    assert tl.state_dict()["data_order"] is None
    assert not [r for r in caplog.records if "ElasticSampler" in r.getMessage()]  # replayable: no warning
