"""Misuse cases: what users get wrong, each refused early with an error that names the fix, or handled so that
nothing trained is lost. One test (or parametrised case) per item of the trust issue; the items that need their own
machinery are tested beside it:

- a loader's or sampler's own generator, workers, augmentation, accumulation, bf16, across SIGKILL:
  ``tests/test_checkpoint_resume.py`` (and in-process, ``packages/core-loop/tests/test_resume.py``); torchrun with
  2 ranks, killed at an epoch end and mid-epoch: ``tests/test_distributed.py``
- rows of mixed dtypes under the default fast collation: ``tests/test_fast_collate_loop.py``
- ``gpu_mode='ddp'`` after a threaded op with ``OMP_NUM_THREADS=2``: ``tests/test_distributed.py``
- a disk that fills during a background write: ``packages/checkpointing/tests/test_disk_full.py``
- a wrong S3 secret, an unknown key, an endpoint without scheme: ``packages/cloud/tests/test_store.py``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn, optim

from aitoolbox.checkpointing import CheckpointIncompatibleError, CheckpointManager
from aitoolbox.experiment.result_package.basic_packages import (
    BinaryClassificationResultPackage,
    ClassificationResultPackage,
)
from aitoolbox.loop import LoopConfigError, resolve_mode
from aitoolbox.loop.callbacks import Callback, EarlyStopping
from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
from aitoolbox.torchtrain._composition.end_save import storage_notes
from aitoolbox.torchtrain.train_loop import TrainLoopCheckpoint, TrainLoopCheckpointEndSave, TrainLoopEndSave


def _args(model: nn.Module | None = None) -> tuple[Any, ...]:
    model = model or TinyClassifier()
    return (
        model,
        make_classification_loader(64, shuffle=True),
        make_classification_loader(32, seed=2),
        make_classification_loader(32, seed=3),
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
    )


class Scripted(Callback):
    """Puts the next value of ``values`` into the history as ``name`` at every epoch end (before the checkpoint)."""

    def __init__(self, name: str, values: list[float]) -> None:
        super().__init__(execution_order=-50)
        self.name, self.values = name, values

    def provided_metrics(self) -> tuple[str, ...]:
        return (self.name,)

    def on_epoch_end(self) -> None:
        tl = self.train_loop_obj
        tl.train_history.insert_single_result_into_history(self.name, self.values[tl.epoch])


# ------------------------------------------------------------------ one direction rule


@pytest.mark.parametrize(
    ("metric", "values", "kept"),
    [
        ("val_mse", [0.9, 0.1, 0.5, 0.7], {2, 4}),  # minimised: the best (0.1, epoch 2) and the newest
        ("val_bleu", [0.1, 0.9, 0.5, 0.3], {2, 4}),  # maximised
        ("val_error_rate", [0.9, 0.1, 0.5, 0.7], {2, 4}),
    ],
)
def test_checkpoint_ranking_keeps_the_best(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, metric: str, values: list[float], kept: set[int]
) -> None:
    tl = TrainLoopCheckpoint(
        *_args(), "p", "e", tmp_path, rm_subopt_local_models=metric, num_best_checkpoints_kept=1, device="cpu"
    )
    with caplog.at_level(logging.INFO):
        tl.fit(num_epochs=4, callbacks=[Scripted(metric, values)])
    assert {i.epoch for i in CheckpointManager(tl.checkpoint_dir).list()} == kept
    better = "lower is better" if resolve_mode(metric) == "min" else "higher is better"
    assert caplog.text.count(f"checkpoints are ranked by {metric}, {better}") == 1


def test_ranked_retention_with_iteration_checkpoints_keeps_the_real_best(tmp_path: Path) -> None:
    """Only epoch-end checkpoints are scored: a mid-epoch one (every 3 iterations here; 4 batches per epoch) carries
    no score, so it neither outranks nor evicts a scored one. Before, it inherited the previous epoch's score and
    the true second best (epoch 2, 0.2) was deleted."""
    tl = TrainLoopCheckpoint(
        *_args(),
        "p",
        "e",
        tmp_path,
        rm_subopt_local_models="score",
        rm_subopt_mode="min",
        num_best_checkpoints_kept=2,
        iteration_save_freq=3,
        device="cpu",
    )
    tl.fit(num_epochs=5, callbacks=[Scripted("score", [0.1, 0.9, 0.2, 0.8, 0.7])])
    infos = CheckpointManager(tl.checkpoint_dir).list(verify=True)
    assert storage_notes(tl, "p", tl.experiment_dir.name) == [  # what summary.md says of it
        "checkpoints: `checkpoint_model/` keeps the newest and the 2 best epoch-end ones by score (lower is better)"
    ]
    assert [(i.epoch, i.iteration) for i in infos] == [(1, 4), (3, 12), (5, 20)]  # the two best, the newest
    assert [i.metrics.get("score") for i in infos] == [0.1, 0.2, 0.7]


def test_a_preemption_at_an_epoch_end_keeps_that_epochs_score(tmp_path: Path) -> None:
    """A signal during the last epoch's end work commits the preemption checkpoint at the epoch-end position: it
    replaces the epoch-end checkpoint of the same name and must keep its score (the fault campaign found the best
    checkpoint dropped from the ranking this way)."""
    import os
    import signal

    from aitoolbox.loop.preemption import Preempted

    class SignalAtTheEnd(Callback):
        def on_epoch_end(self) -> None:
            if self.train_loop_obj.epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    tl = TrainLoopCheckpoint(
        *_args(),
        "p",
        "e",
        tmp_path,
        rm_subopt_local_models="score",
        rm_subopt_mode="min",
        num_best_checkpoints_kept=1,
        device="cpu",
    )
    with pytest.raises(Preempted):
        tl.fit(num_epochs=3, callbacks=[Scripted("score", [0.5, 0.9, 0.1]), SignalAtTheEnd()])
    infos = CheckpointManager(tl.checkpoint_dir).list()
    assert [(i.epoch, i.metrics.get("score"), "preemption" in i.meta) for i in infos] == [(3, 0.1, True)]


@pytest.mark.parametrize("metric", ["val_bleu", "val_iou", "val_dice", "val_map", "val_accuracy", "val_r2"])
def test_early_stopping_and_ranking_agree_on_maximised_metrics(metric: str) -> None:
    assert EarlyStopping(monitor=metric).mode == "max" == resolve_mode(metric)


@pytest.mark.parametrize("metric", ["val_loss", "val_mse", "val_mae", "val_rmse", "perplexity", "test_wer", "val_nll"])
def test_early_stopping_and_ranking_agree_on_minimised_metrics(metric: str) -> None:
    assert EarlyStopping(monitor=metric).mode == "min" == resolve_mode(metric)


def test_explicit_mode_wins(tmp_path: Path) -> None:
    assert EarlyStopping(monitor="val_bleu", mode="min").mode == "min"
    tl = TrainLoopCheckpoint(
        *_args(),
        "p",
        "e",
        tmp_path,
        rm_subopt_local_models="val_bleu",
        num_best_checkpoints_kept=1,
        rm_subopt_mode="min",
        device="cpu",
    )
    tl.fit(num_epochs=4, callbacks=[Scripted("val_bleu", [0.1, 0.9, 0.5, 0.3])])
    assert {i.epoch for i in CheckpointManager(tl.checkpoint_dir).list()} == {1, 4}
    with pytest.raises(LoopConfigError, match="rm_subopt_mode must be 'auto', 'min' or 'max', got 'lower'"):
        TrainLoopCheckpoint(*_args(), "p", "e", tmp_path, rm_subopt_local_models=True, rm_subopt_mode="lower")


def test_a_ranking_metric_no_package_produces_is_refused_before_epoch_1(tmp_path: Path) -> None:
    from aitoolbox.torchtrain.callbacks import ModelPerformanceEvaluation

    tl = TrainLoopCheckpoint(*_args(), "p", "e", tmp_path, rm_subopt_local_models="val_f1_score", device="cpu")
    evaluation = ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]))
    with pytest.raises(LoopConfigError, match=r"'val_f1_score', which nothing in this run puts .*'val_accuracy'"):
        tl.fit(num_epochs=2, callbacks=[evaluation])
    assert tl.iteration == 0
    tl = TrainLoopCheckpoint(*_args(), "p", "e", tmp_path, rm_subopt_local_models="val_accuracy", device="cpu")
    tl.fit(num_epochs=1, callbacks=[ModelPerformanceEvaluation(ClassificationResultPackage(metrics=["accuracy"]))])
    assert "val_accuracy" in CheckpointManager(tl.checkpoint_dir).list()[-1].metrics


# ------------------------------------------------------------------ nothing trained is lost at the end


@pytest.mark.parametrize("variant", [TrainLoopEndSave, TrainLoopCheckpointEndSave])
def test_a_failing_result_package_loses_neither_model_nor_history(tmp_path: Path, variant: type) -> None:
    args = _args()
    tl = variant(
        *args,
        "p",
        "e",
        tmp_path,
        {"lr": 0.1},
        val_result_package=ClassificationResultPackage(),
        test_result_package=BinaryClassificationResultPackage(),
        device="cpu",
    )  # binary package on 3 classes: it raises
    with pytest.raises(Exception, match="binary") as err:
        tl.fit(num_epochs=2)
    exp = tl.experiment_dir
    saved = torch.load(exp / "model" / "model_state_dict.pt", weights_only=True)
    assert all(torch.equal(v, args[0].state_dict()[k]) for k, v in saved.items())
    assert (exp / "results" / "training_history.json").is_file()
    assert (exp / "results" / "validation_results.json").is_file()  # the other split was still evaluated
    assert tl.results["validation"]["accuracy"] >= 0
    summary = (exp / "summary.md").read_text()
    assert "test result package failed" in summary and type(err.value).__name__ in summary


# ------------------------------------------------------------------ arguments users get wrong


def _loop(**kwargs: Any) -> Any:
    from aitoolbox.loop import TrainLoop

    return TrainLoop(*_args(), device="cpu", **kwargs)


@pytest.mark.parametrize(
    ("value", "evaluated_epochs"), [(True, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (3, [0, 3]), (False, [])]
)
def test_end_auto_eval_int_means_every_n_epochs(value: Any, evaluated_epochs: list[int]) -> None:
    seen: list[int] = []

    class Watch(Callback):
        def on_epoch_end(self) -> None:
            tl = self.train_loop_obj
            if len(tl.train_history["val_loss"] if "val_loss" in tl.train_history else []) > len(seen):
                seen.append(tl.epoch)

    _loop(end_auto_eval=value).fit(num_epochs=5, callbacks=[Watch()])
    assert seen == evaluated_epochs


@pytest.mark.parametrize("value", ["no", 0, -1, 1.5, None])
def test_bad_end_auto_eval_is_refused(value: Any) -> None:
    with pytest.raises(LoopConfigError, match=r"end_auto_eval must be True, False or an int N >= 1 \(every N epochs\)"):
        _loop(end_auto_eval=value)


def test_the_same_callback_twice_is_refused() -> None:
    es = EarlyStopping(monitor="loss", patience=1)
    tl = _loop()
    with pytest.raises(LoopConfigError, match=r"callbacks\[1\] \(EarlyStopping\) is the same instance .* pass each"):
        tl.fit(num_epochs=2, callbacks=[es, es])
    assert tl.iteration == 0


def test_a_scheduler_on_another_optimizer_is_refused() -> None:
    from aitoolbox.loop.callbacks import LRSchedulerCallback

    other = optim.SGD(TinyClassifier().parameters(), lr=0.1)
    tl = _loop()
    message = r"StepLR was built on another optimizer .* LRSchedulerCallback\(lambda opt: StepLR"
    with pytest.raises(LoopConfigError, match=message):
        tl.fit(num_epochs=1, callbacks=[LRSchedulerCallback(optim.lr_scheduler.StepLR(other, step_size=1))])
    own = LRSchedulerCallback(optim.lr_scheduler.StepLR(tl.optimizer, step_size=1, gamma=0.5))
    tl.fit(num_epochs=2, callbacks=[own])
    assert tl.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_a_criterion_class_is_refused() -> None:
    model = TinyClassifier()
    args = (model, make_classification_loader(16), None, None, optim.SGD(model.parameters(), lr=0.1))
    from aitoolbox.loop import TrainLoop

    with pytest.raises(LoopConfigError, match=r"criterion is the class NLLLoss, not a loss function; .* NLLLoss\(\)"):
        TrainLoop(*args, nn.NLLLoss)


@pytest.mark.parametrize("which", ["validation_loader", "test_loader"])
def test_an_empty_evaluation_loader_is_refused(which: str) -> None:
    from aitoolbox.loop import TrainLoop

    model = TinyClassifier()
    empty = make_classification_loader(3, batch_size=4, drop_last=True)
    loaders = {"validation_loader": None, "test_loader": None, which: empty}
    with pytest.raises(LoopConfigError, match=f"{which} is empty \\(0 batches\\)"):
        TrainLoop(
            model,
            make_classification_loader(16),
            loaders["validation_loader"],
            loaders["test_loader"],
            optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
        )


def test_an_evaluation_iterable_without_batches_is_refused() -> None:
    tl = _loop()
    tl.validation_loader = []  # an iterable without len() checks: it yields nothing
    with pytest.raises(LoopConfigError, match="validation_loader yielded no batches, so its loss is undefined"):
        tl.evaluate_loss_on_validation_set()


# ------------------------------------------------------------------ what the model's methods return


class Returns(TinyClassifier):
    def __init__(self, loss: Any = None, predictions: Any = None) -> None:
        super().__init__()
        self.loss, self.predictions = loss, predictions

    def get_loss(self, batch: Any, criterion: Any, device: Any) -> Any:
        loss = super().get_loss(batch, criterion, device)
        return self.loss(loss) if self.loss else loss

    def get_predictions(self, batch: Any, device: Any) -> Any:
        out = super().get_predictions(batch, device)
        return self.predictions(out) if self.predictions else out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda loss: None, r"Returns.get_loss must return the batch's loss as a scalar torch.Tensor, got NoneType"),
        (lambda loss: loss.item(), r"got float \(was .item\(\) called on it\?\)"),
        (lambda loss: (loss, loss), r"as a scalar torch.Tensor, got tuple"),
        (lambda loss: loss.repeat(4), r"Returns.get_loss returned a loss tensor of shape \(4,\), not a scalar"),
        (lambda loss: loss.detach(), r"Returns.get_loss returned a loss that does not require grad"),
    ],
)
def test_a_bad_get_loss_is_named_at_the_first_batch(make: Any, message: str) -> None:
    model = Returns(loss=make)
    from aitoolbox.loop import TrainLoop

    tl = TrainLoop(
        model, make_classification_loader(32), None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss()
    )
    with pytest.raises(LoopConfigError, match=message):
        tl.fit(num_epochs=1)
    assert tl.iteration == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda out: out[:2], r"get_predictions must return \(y_pred, y_true, metadata\), got 2 values"),
        (lambda out: out[0], r"get_predictions must return \(y_pred, y_true, metadata\), got Tensor"),
        (lambda out: (out[0], out[1], [1, 2]), r"returned metadata of type list; return a dict"),
    ],
)
def test_a_bad_get_predictions_is_named(make: Any, message: str) -> None:
    model = Returns(predictions=make)
    from aitoolbox.loop import TrainLoop

    tl = TrainLoop(
        model,
        make_classification_loader(32),
        make_classification_loader(32),
        None,
        optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
    )
    with pytest.raises(LoopConfigError, match=message):
        tl.predict_on_validation_set()


# ------------------------------------------------------------------ resuming into a different run


class AbortAt(Callback):
    def __init__(self, iteration: int) -> None:
        super().__init__()
        self.iteration = iteration

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if tl.iteration == self.iteration:
            tl.checkpoint_manager.wait()
            raise KeyboardInterrupt  # the run dies here; what was committed stays


def _ckpt_loop(root: Path, *, opt: str = "adam", batch_size: int = 16, n: int = 64) -> TrainLoopCheckpoint:
    torch.manual_seed(0)
    model = TinyClassifier()
    optimizer = optim.Adam(model.parameters(), lr=1e-2) if opt == "adam" else optim.SGD(model.parameters(), lr=0.1)
    return TrainLoopCheckpoint(
        model,
        make_classification_loader(n, batch_size=batch_size, shuffle=True),
        None,
        None,
        optimizer,
        nn.CrossEntropyLoss(),
        "p",
        "e",
        root,
        iteration_save_freq=2,
        device="cpu",
    )


def _interrupted(root: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _ckpt_loop(root).fit(num_epochs=3, callbacks=[AbortAt(7)])  # 4 batches/epoch: checkpoint at iteration 6


def test_resuming_an_adam_checkpoint_with_sgd_names_both(tmp_path: Path) -> None:
    _interrupted(tmp_path)
    tl = _ckpt_loop(tmp_path, opt="sgd")
    with pytest.raises(CheckpointIncompatibleError, match="optimizer 0 is SGD but the checkpoint's is Adam"):
        tl.fit(num_epochs=3, resume_from="latest")
    assert tl.iteration == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 8}, r"batch size 16 -> 8, dataset length 64 -> 64|batch size 16 -> 8"),
        ({"n": 80}, r"dataset length 64 -> 80, batches per epoch 4 -> 5"),
        ({"grad_accumulation": 2}, r"grad_accumulation 1 -> 2"),
    ],
)
def test_a_mid_epoch_resume_after_a_change_is_refused_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, int], message: str
) -> None:
    from aitoolbox.loop import ResumeMismatchError

    _interrupted(tmp_path)
    accum = change.pop("grad_accumulation", 1)
    tl = _ckpt_loop(tmp_path, **change)
    with pytest.raises(
        ResumeMismatchError, match=f"resumed at batch 2 of epoch 1, but since it was saved: .*{message}"
    ):
        tl.fit(num_epochs=3, resume_from="latest", grad_accumulation=accum)
    tl = _ckpt_loop(tmp_path, **change)
    with caplog.at_level(logging.WARNING):
        tl.fit(num_epochs=3, resume_from="latest", grad_accumulation=accum, allow_resume_changes=True)
    assert "continuing anyway, as asked" in caplog.text and tl.epochs_done == 3


def test_shuffle_changed_mid_epoch_is_refused(tmp_path: Path) -> None:
    from aitoolbox.loop import ResumeMismatchError

    _interrupted(tmp_path)
    tl = _ckpt_loop(tmp_path)
    tl.train_loader = make_classification_loader(64, batch_size=16, shuffle=False)
    with pytest.raises(ResumeMismatchError, match=r"sampler \(shuffle\) 'RandomSampler' -> 'SequentialSampler'"):
        tl.fit(num_epochs=3, resume_from="latest")


def test_a_custom_sampler_without_state_is_named_at_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import random

    from torch.utils.data import DataLoader, Sampler

    class Mine(Sampler[int]):
        def __init__(self) -> None:
            self.rng = random.Random(0)  # hidden state no checkpoint sees

        def __len__(self) -> int:
            return 64

        def __iter__(self) -> Any:
            return iter(self.rng.sample(range(64), 64))

    def loop() -> TrainLoopCheckpoint:
        tl = _ckpt_loop(tmp_path)
        tl.train_loader = DataLoader(tl.train_loader.dataset, batch_size=16, sampler=Mine())
        return tl

    loop().fit(num_epochs=1)
    with caplog.at_level(logging.WARNING):
        loop().fit(num_epochs=2, resume_from="latest")
    assert "the sampler Mine is not one of torch's and has no state_dict()/load_state_dict()" in caplog.text


# ------------------------------------------------------------------ errors that say the cause


def test_a_full_disk_is_named_at_the_failing_save(tmp_path: Path) -> None:
    from aitoolbox.checkpointing import CheckpointWriteError
    from aitoolbox.checkpointing.testing import SmallDiskUnavailable, small_disk

    try:
        context = small_disk(tmp_path / "disk", "1m")
        disk = context.__enter__()
    except SmallDiskUnavailable as err:
        pytest.skip(str(err))
    try:
        model = TinyClassifier(hidden=40_000)  # ~1.8 MiB of parameters: no checkpoint fits on 1 MiB
        tl = TrainLoopCheckpoint(
            model,
            make_classification_loader(32),
            None,
            None,
            optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            "p",
            "e",
            disk,
            device="cpu",
        )
        with pytest.raises(CheckpointWriteError, match="no space left on device for a checkpoint") as err:
            tl.fit(num_epochs=3)
        assert tl.epoch == 0  # at the first epoch's save, not an epoch later
        assert "unexpected pos" not in str(err.value)
    finally:
        context.__exit__(None, None, None)


def test_resuming_when_every_checkpoint_is_damaged_names_the_damage(tmp_path: Path) -> None:
    from aitoolbox.checkpointing import CheckpointNotFoundError

    tl = _ckpt_loop(tmp_path)
    tl.fit(num_epochs=2)
    for info in CheckpointManager(tl.checkpoint_dir).list():
        (info.path / "model.pt").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointNotFoundError, match=r"every one is damaged: .*part 'model' has 10 bytes.*truncated"):
        _ckpt_loop(tmp_path).fit(num_epochs=3, resume_from="latest")
    with pytest.raises(CheckpointNotFoundError, match=r"every one is damaged: .*Restore the folder from a copy"):
        _ckpt_loop(tmp_path).fit(num_epochs=3, resume_from=tl.experiment_dir)


def test_errors_the_readme_names_are_the_ones_raised() -> None:
    from aitoolbox.loop import ModelNotSupportedError, TrainLoop

    with pytest.raises(LoopConfigError) as err:  # README: a model that is not a module raises LoopConfigError
        TrainLoop({"not": "a module"}, make_classification_loader(8), None, None, [], None)
    assert isinstance(err.value, ModelNotSupportedError)


# ------------------------------------------------------------------ counters: one meaning each (the original's)


class Counters(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, int, int]] = []

    def _note(self, hook: str) -> None:
        tl = self.train_loop_obj
        self.seen.append((hook, tl.epoch, tl.total_iteration_idx, tl.iteration))

    def on_train_begin(self) -> None:
        self._note("train_begin")

    def on_epoch_begin(self) -> None:
        self._note("epoch_begin")

    def on_batch_begin(self) -> None:
        self._note("batch_begin")

    def on_after_optimizer_step(self) -> None:
        self._note("step")

    def on_batch_end(self) -> None:
        self._note("batch_end")

    def on_epoch_end(self) -> None:
        self._note("epoch_end")

    def on_train_end(self) -> None:
        self._note("train_end")


def test_counters_at_every_hook_are_the_originals() -> None:
    """``epoch``: the epoch's 0-based index, the last one's after training; ``total_iteration_idx``: the batch's
    0-based global index (-1 before the first); ``iteration``: batches done."""
    counters = Counters()
    tl = _loop()
    tl.train_loader = make_classification_loader(32, batch_size=16)  # 2 batches per epoch
    tl.fit(num_epochs=2, callbacks=[counters])
    assert counters.seen == [
        ("train_begin", 0, -1, 0),
        ("epoch_begin", 0, -1, 0),
        ("batch_begin", 0, 0, 0),
        ("step", 0, 0, 0),
        ("batch_end", 0, 0, 1),
        ("batch_begin", 0, 1, 1),
        ("step", 0, 1, 1),
        ("batch_end", 0, 1, 2),
        ("epoch_end", 0, 1, 2),
        ("epoch_begin", 1, 1, 2),
        ("batch_begin", 1, 2, 2),
        ("step", 1, 2, 2),
        ("batch_end", 1, 2, 3),
        ("batch_begin", 1, 3, 3),
        ("step", 1, 3, 3),
        ("batch_end", 1, 3, 4),
        ("epoch_end", 1, 3, 4),
        ("train_end", 1, 3, 4),
    ]
    assert (tl.epoch, tl.total_iteration_idx, tl.iteration, tl.epochs_done) == (1, 3, 4, 2)
    # a second fit continues the counts
    counters.seen.clear()
    tl.fit(num_epochs=1, callbacks=[counters])
    assert counters.seen[0] == ("train_begin", 1, 3, 4) and counters.seen[1] == ("epoch_begin", 2, 3, 4)
    assert (tl.epoch, tl.total_iteration_idx, tl.iteration, tl.epochs_done) == (2, 5, 6, 3)


def test_num_iterations_counts_like_a_hand_written_loop() -> None:
    tl = _loop()
    tl.train_loader = make_classification_loader(32, batch_size=16)
    tl.fit(num_iterations=3)  # batches 0, 1, 2: a loop `for i in range(3)` ends with i == 2
    assert (tl.iteration, tl.total_iteration_idx, tl.epoch) == (3, 2, 1)


def test_counters_after_a_resume(tmp_path: Path) -> None:
    first = _ckpt_loop(tmp_path)
    first.fit(num_epochs=2)
    counters = Counters()
    tl = _ckpt_loop(tmp_path)
    tl.fit(num_epochs=3, resume_from="latest", callbacks=[counters])
    # as after a fit: epoch is the last complete epoch's index until the next one begins
    assert counters.seen[0] == ("train_begin", 1, 7, 8) and counters.seen[1:3] == [
        ("epoch_begin", 2, 7, 8),
        ("batch_begin", 2, 8, 8),
    ]
    assert (tl.epoch, tl.total_iteration_idx, tl.epochs_done) == (2, 11, 3)


def test_an_optimizer_class_and_a_dataset_for_a_loader_are_named() -> None:
    from aitoolbox.loop import TrainLoop

    model = TinyClassifier()
    loader = make_classification_loader(16)
    with pytest.raises(LoopConfigError, match=r"optimizer is the class Adam, .* Adam\(model.parameters\(\), lr=...\)"):
        TrainLoop(model, loader, None, None, optim.Adam, nn.CrossEntropyLoss())
    with pytest.raises(LoopConfigError, match=r"got TensorDataset; wrap the dataset: DataLoader\(dataset, batch_size"):
        TrainLoop(model, loader.dataset, None, None, optim.Adam(model.parameters()), nn.CrossEntropyLoss())


def test_an_optimizer_given_twice_or_sharing_parameters_is_refused() -> None:
    from aitoolbox.loop import TrainLoop

    model = TinyClassifier()
    loader = make_classification_loader(16)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(LoopConfigError, match="optimizer 1 is optimizer 0, so those parameters would be updated twice"):
        TrainLoop(model, loader, None, None, [opt, opt], nn.CrossEntropyLoss())
    other = optim.Adam(model.net[0].parameters())
    with pytest.raises(LoopConfigError, match="optimizer 1 steps parameters of optimizer 0"):
        TrainLoop(model, loader, None, None, [opt, other], nn.CrossEntropyLoss())
    first = optim.SGD(model.net[0].parameters(), lr=0.1)
    second = optim.Adam(model.net[2].parameters())
    TrainLoop(model, loader, None, None, [first, second], nn.CrossEntropyLoss())  # disjoint: fine


def test_flags_and_names_are_checked_exactly() -> None:
    from aitoolbox.loop.callbacks import TerminateOnNaN

    with pytest.raises(LoopConfigError, match="raise_error must be True or False, got 'no'"):
        TerminateOnNaN(raise_error="no")  # type: ignore[arg-type]
    for name in ("proj\n", "exp\n"):
        with pytest.raises(LoopConfigError, match="must be a non-empty name of letters"):
            TrainLoopCheckpoint(*_args(), name, "exp", "/tmp/unused", device="cpu")
        with pytest.raises(LoopConfigError, match="must be a non-empty name of letters"):
            TrainLoopCheckpoint(*_args(), "proj", name, "/tmp/unused", device="cpu")
