"""``python -m aitoolbox.compare``: runs that differ at a known step are reported at that step (data order, loss),
with the hyperparameter difference and both curves; identical runs are reported the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aitoolbox.compare import compare, first_trained
from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
from aitoolbox.loop import ElasticSampler
from aitoolbox.loop.callbacks import Callback
from aitoolbox.loop.elastic import elastic_sampler
from aitoolbox.loop.testing import TinyClassifier, make_classification_data
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpointEndSave


class ReseedAtEpoch1(Callback):
    """From epoch 1 on, the sampler the loop iterates draws with another seed (a resume with the wrong seed)."""

    def on_epoch_begin(self) -> None:
        tl = self.train_loop_obj
        if tl.epoch == 1:
            sampler = elastic_sampler(tl.loaders.train(tl.train_loader))
            assert sampler is not None
            sampler.seed = 99


def _run(root: Path, name: str, *, drop_last: bool = False, every: int = 1, reseed: bool = False) -> Path:
    torch.manual_seed(0)
    data = make_classification_data(200, seed=1)  # 32 a step: 7 steps an epoch (6 with drop_last)
    batches = ElasticSampler(data, global_batch_size=32, seed=5, drop_last=drop_last, log_every=every)
    model = TinyClassifier()
    tl = TrainLoopCheckpointEndSave(
        model,
        DataLoader(data, batch_sampler=batches),
        DataLoader(make_classification_data(40, seed=2), batch_size=20),
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        project_name="cmp",
        experiment_name=name,
        local_model_result_folder_path=root,
        hyperparams={"lr": 0.1, "drop_last": drop_last},
        val_result_package=ClassificationResultPackage(),
        device="cpu",
        progress_bar=False,
    )
    tl.fit(num_epochs=2, callbacks=[ReseedAtEpoch1()] if reseed else [])
    return tl.experiment_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    return {
        "a": _run(root, "a", every=5),
        "again": _run(root, "again", every=5),
        "drop": _run(root, "drop", drop_last=True, every=5),
        "a1": _run(root, "a1"),
        "reseeded": _run(root, "reseeded", reseed=True),
    }


def test_a_difference_between_two_marks_is_found_at_its_exact_step(runs: dict[str, Path]) -> None:
    cmp = compare(runs["a"], runs["drop"])
    # steps 1-6 are epoch 0's full batches in both; A's 7th is epoch 0's filled-up last batch, B's is epoch 1's first
    assert cmp.data_order == {"step": 7, "epoch": 0, "after": 6, "exact": True}
    assert cmp.hyperparams == [("drop_last", False, True)]
    assert cmp.environment == [] and not cmp.same


def test_a_reseeded_epoch_is_reported_at_its_first_step_in_order_and_loss(runs: dict[str, Path]) -> None:
    cmp = compare(runs["a1"], runs["reseeded"])
    assert cmp.data_order is not None and cmp.data_order["step"] == 8  # epoch 1's first step
    assert cmp.loss is not None and cmp.loss["step"] == 8
    assert cmp.metric is not None and cmp.metric["epoch"] == 1 and cmp.metric["metric"] == "loss"


def test_the_command_writes_the_report_and_both_curves(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "aitoolbox.compare", str(runs["a1"]), str(runs["reseeded"]), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    text = (out / "report.md").read_text()
    assert "**first differing step: 8** (equal up to step 7)" in text
    assert "**first step whose loss differs: 8**" in text
    assert text in proc.stdout
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_identical_runs_compare_the_same(runs: dict[str, Path], tmp_path: Path) -> None:
    cmp = compare(runs["a"], runs["again"])
    assert cmp.same and cmp.hyperparams == []
    assert "the same at every common mark" in cmp.report()
    bad = subprocess.run(
        [sys.executable, "-m", "aitoolbox.compare", str(tmp_path), str(runs["a"]), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "is not an experiment folder" in bad.stderr


def test_the_first_step_and_checkpoint_that_trained_a_sample(runs: dict[str, Path]) -> None:
    sampler = ElasticSampler(200, global_batch_size=32, seed=5)  # the runs' sampler settings
    step = next(s for s in range(sampler.steps) if 150 in sampler.global_batch(s).tolist()) + 1
    found = first_trained(runs["a1"], 150)
    assert found == {"step": step, "epoch": 0, "checkpoint": "ckpt-e0001-i000000007"}  # epoch 1 end
    proc = subprocess.run(
        [sys.executable, "-m", "aitoolbox.compare", str(runs["a1"]), "--sample", "150"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and f"first trained at step {step} (epoch index 0)" in proc.stdout
    assert first_trained(runs["a1"], 10_000) is None  # not in the data set
    with pytest.raises(ValueError, match="does not follow its sampler settings"):
        first_trained(runs["reseeded"], 0)  # its seed changed during the run (the log keeps the last)
