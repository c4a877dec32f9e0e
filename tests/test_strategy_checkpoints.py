"""A strategy owns the state dicts the checkpointing variants save and load: a fake sharded one (``HalvesStrategy``,
whose ranks each write their share) trains, checkpoints (the sharded layout, its shards on disk), resumes and ends
exactly like one device; its final model has the eager keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn, optim

from aitoolbox.checkpointing import CheckpointManager
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop.testing import HalvesStrategy, TinyClassifier, make_classification_loader
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave


def _tl(root: Path, **options: Any) -> TrainLoopCheckpointEndSave:
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.1)
    return TrainLoopCheckpointEndSave(
        model,
        make_classification_loader(96, batch_size=16, shuffle=True),
        make_classification_loader(32, seed=1),
        None,
        optim.Adam(model.parameters(), lr=1e-2),
        nn.CrossEntropyLoss(),
        "proj",
        "exp",
        root,
        {},
        val_result_package=ClassificationResultPackage(),
        device="cpu",
        **options,
    )


def test_a_sharded_strategy_checkpoints_and_resumes_like_one_device(tmp_path: Path) -> None:
    straight = _tl(tmp_path / "straight")
    straight.fit(num_epochs=3)

    strategy = HalvesStrategy()
    first = _tl(tmp_path / "sharded", strategy=strategy)
    first.fit(num_epochs=2)
    saved = CheckpointManager(first.experiment_dir / "checkpoint_model").load()
    assert (
        saved.info.layout == "dcp" and saved.info.world_size == 1 and saved.info.sharded_parts == ("model", "optimizer")
    )
    assert "net.0.weight#0" in saved["model"]  # the strategy's shards, as each rank wrote them
    # one sharded model and optimizer state per checkpoint (2 epochs); the full one only for the final model
    assert strategy.calls["model_state_dict(full=False)"] == 2
    assert strategy.calls["optimizer_state_dict(full=False)"] == 2
    assert strategy.calls["model_state_dict(full=True)"] == 1
    assert "optimizer_state_dict(full=True)" not in strategy.calls

    again = HalvesStrategy()
    resumed = _tl(tmp_path / "sharded", strategy=again)
    resumed.fit(num_epochs=3, resume_from="latest")
    assert again.calls["load_model_state_dict(full=False)"] == 1  # each rank reads its share
    assert again.calls["load_optimizer_state_dict(full=False)"] == 1
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    final = torch.load(resumed.experiment_dir / "model/model_state_dict.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in straight.model.state_dict().items())
