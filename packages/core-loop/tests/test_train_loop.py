from __future__ import annotations

import copy
import logging
import random

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop import LoopConfigError, ModelNotSupportedError, TrainLoop
from aitoolbox.loop.testing import TinyClassifier, make_classification_data, make_classification_loader


def _plain_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _hand_written(model: nn.Module, loader: DataLoader, epochs: int, lr: float = 0.05, accum: int = 1) -> list[float]:
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for i, (x, y) in enumerate(loader, 1):
            loss = crit(model(x), y)
            (loss / accum).backward()
            total += loss.item()
            n += 1
            if i % accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
        if n % accum:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(total / n)
    return losses


def test_fit_matches_a_hand_written_loop_exactly() -> None:
    loader = make_classification_loader(96, batch_size=16)
    reference = _plain_model()
    ref_losses = _hand_written(reference, loader, epochs=3)

    model = _plain_model()
    tl = TrainLoop(
        model, loader, None, None, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss()
    )
    returned = tl.fit(num_epochs=3)

    assert returned is model
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert tl.train_history["loss"] == pytest.approx(ref_losses, rel=1e-6)
    assert "val_loss" not in tl.train_history
    assert (tl.epoch, tl.epochs_done, tl.iteration, tl.total_iteration_idx) == (2, 3, 18, 17)


def test_grad_accumulation_matches_hand_written_accumulation() -> None:
    loader = make_classification_loader(80, batch_size=8)  # 10 batches: accumulation 3 leaves a partial step
    reference = _plain_model()
    _hand_written(reference, loader, epochs=2, accum=3)
    model = _plain_model()
    tl = TrainLoop(
        model, loader, None, None, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss()
    )
    tl.fit(num_epochs=2, grad_accumulation=3)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_training_reduces_loss_and_records_val_loss_each_epoch() -> None:
    model = TinyClassifier()
    train = make_classification_loader(512, batch_size=32, shuffle=True)
    val = make_classification_loader(128, batch_size=50, seed=1)
    tl = TrainLoop(model, train, val, None, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss())
    tl.fit(num_epochs=5)
    hist = tl.train_history
    assert len(hist["loss"]) == len(hist["val_loss"]) == 5
    assert hist["loss"][-1] < hist["loss"][0] * 0.6
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert hist["val_loss"][-1] == pytest.approx(tl.evaluate_loss_on_validation_set())


def test_num_iterations_stops_mid_epoch_and_closes_the_epoch() -> None:
    model = TinyClassifier()
    loader = make_classification_loader(160, batch_size=16)  # 10 batches per epoch
    val = make_classification_loader(32, batch_size=16, seed=3)
    tl = TrainLoop(model, loader, val, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    tl.fit(num_iterations=25)
    assert tl.iteration == 25
    assert tl.epochs_done == 3  # two full epochs and the closed partial third
    assert len(tl.train_history["val_loss"]) == 3


def test_second_fit_continues_training() -> None:
    model = TinyClassifier()
    loader = make_classification_loader(64, batch_size=16)
    tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    tl.fit(num_epochs=2)
    tl.fit(num_epochs=3)
    assert tl.epochs_done == 5 and len(tl.train_history["loss"]) == 5


def test_validation_loss_is_weighted_by_batch_size() -> None:
    model = TinyClassifier()
    data = make_classification_data(70, seed=5)
    loader = DataLoader(data, batch_size=32)  # batches of 32, 32, 6: the mean of batch means would be wrong
    tl = TrainLoop(model, loader, loader, loader, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    x, y = data.tensors
    with torch.no_grad():
        expected = nn.CrossEntropyLoss()(model(x), y).item()
    assert tl.evaluate_loss_on_validation_set() == pytest.approx(expected, rel=1e-5)
    assert tl.evaluate_loss_on_test_set() == pytest.approx(expected, rel=1e-5)
    assert tl.evaluate_loss_on_train_set() == pytest.approx(expected, rel=1e-5)


def test_evaluation_does_not_consume_the_global_rng() -> None:
    model = TinyClassifier()
    shuffled = make_classification_loader(64, batch_size=8, shuffle=True)
    tl = TrainLoop(model, shuffled, shuffled, shuffled, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    torch.manual_seed(123)
    random.seed(7)
    expected_torch, expected_py = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(7)
    tl.evaluate_loss_on_validation_set()
    tl.predict_on_test_set()
    tl.evaluate_loss_on_train_set()
    assert torch.equal(torch.rand(3), expected_torch)
    assert random.random() == expected_py


def test_predictions_kept_during_a_pass_own_their_memory() -> None:
    # Labels that are views into a larger storage (a fastcollate worker packs a batch's small outputs into one
    # segment) are copied when kept, so the pass does not keep every batch's segment alive.
    from aitoolbox.loop._evaluation import _to_host

    segment = torch.arange(1000.0)
    labels = segment[10:18]
    kept = _to_host(labels)
    assert torch.equal(kept, labels) and kept.untyped_storage().nbytes() == kept.nbytes == 32
    whole = torch.arange(8)
    assert _to_host(whole).data_ptr() == whole.data_ptr(), "a tensor owning its storage is not copied"
    assert _to_host(segment.view(40, 25).t()).data_ptr() == segment.data_ptr(), "nor a transposed whole"


def test_validation_does_not_change_the_training_trajectory() -> None:
    def run(with_val: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = TinyClassifier()
        train = make_classification_loader(64, batch_size=8, shuffle=True)
        val = make_classification_loader(32, batch_size=8, shuffle=True, seed=2) if with_val else None
        tl = TrainLoop(model, train, val, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
        tl.fit(num_epochs=3)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(True), run(False), strict=True):
        assert torch.equal(a, b)


def test_predict_concatenates_predictions_targets_and_metadata() -> None:
    model = TinyClassifier()
    data = make_classification_data(50, seed=4)
    loader = DataLoader(data, batch_size=16)
    tl = TrainLoop(model, loader, loader, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    y_pred, y_true, meta = tl.predict_on_validation_set()
    x, y = data.tensors
    assert torch.equal(y_true, y)
    assert torch.equal(y_pred, model(x).argmax(dim=1))
    torch.testing.assert_close(meta["row_sum"], x.sum(dim=1))
    assert model.training  # evaluation restores train mode


def test_plain_module_predictions_are_raw_outputs() -> None:
    model = _plain_model()
    loader = make_classification_loader(20, batch_size=8)
    tl = TrainLoop(model, loader, loader, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    y_pred, y_true, meta = tl.predict_on_validation_set()
    assert y_pred.shape == (20, 3) and y_true.shape == (20,) and meta is None


def test_multiple_optimizers_are_all_stepped() -> None:
    model = _plain_model()
    first, second = model[0], model[2]
    before = [copy.deepcopy(first.weight.data), copy.deepcopy(second.weight.data)]
    opts = [optim.SGD(first.parameters(), lr=0.1), optim.SGD(second.parameters(), lr=0.1)]
    tl = TrainLoop(model, make_classification_loader(32), None, None, opts, nn.CrossEntropyLoss())
    tl.fit(num_epochs=1)
    assert not torch.equal(first.weight.data, before[0])
    assert not torch.equal(second.weight.data, before[1])


@pytest.mark.parametrize("amp", ["bf16", True, {"dtype": "bf16"}])
def test_bf16_autocast_on_cpu_trains(amp: object) -> None:
    model = TinyClassifier()
    train = make_classification_loader(256, batch_size=32, shuffle=True)
    tl = TrainLoop(
        model, train, train, None, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(), use_amp=amp
    )
    assert tl.amp.dtype == torch.bfloat16 and tl.grad_scaler is None
    tl.fit(num_epochs=3)
    assert tl.train_history["loss"][-1] < tl.train_history["loss"][0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_iterable_loader_without_len_is_supported() -> None:
    data = make_classification_data(48)

    def batches():
        for i in range(0, 48, 16):
            yield data.tensors[0][i : i + 16], data.tensors[1][i : i + 16]

    class Reiterable:
        def __iter__(self):
            return batches()

    model = TinyClassifier()
    tl = TrainLoop(model, Reiterable(), None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    tl.fit(num_epochs=2)
    assert tl.iteration == 6


# ------------------------------------------------------------------ bad input, before training


def _tl(**overrides: object) -> TrainLoop:
    model = overrides.pop("model", TinyClassifier())
    args = {
        "model": model,
        "train_loader": make_classification_loader(32),
        "validation_loader": None,
        "test_loader": None,
        "optimizer": optim.SGD(model.parameters(), lr=0.1),  # type: ignore[union-attr]
        "criterion": nn.CrossEntropyLoss(),
    }
    args.update(overrides)
    return TrainLoop(**args)  # type: ignore[arg-type]


def test_model_that_is_not_a_module_is_rejected() -> None:
    with pytest.raises(ModelNotSupportedError, match="must be a TTModel .* or a torch.nn.Module, got builtins.dict"):
        TrainLoop({"w": 1}, make_classification_loader(8), None, None, None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of num_epochs and num_iterations"),
        ({"num_epochs": 2, "num_iterations": 5}, "give exactly one of num_epochs and num_iterations"),
        ({"num_epochs": -1}, "num_epochs must be an int >= 0, got -1"),
        ({"num_epochs": 2.5}, "num_epochs must be an int >= 0, got 2.5"),
        ({"num_epochs": 1, "grad_accumulation": 0}, "grad_accumulation must be a positive int, got 0"),
        ({"num_epochs": 1, "callbacks": ["early"]}, r"callbacks\[0\] is 'early', which is not a Callback"),
    ],
)
def test_bad_fit_arguments_fail_before_training(kwargs: dict[str, object], message: str) -> None:
    tl = _tl()
    before = [p.detach().clone() for p in tl.model.parameters()]
    with pytest.raises(LoopConfigError, match=message):
        tl.fit(**kwargs)  # type: ignore[arg-type]
    assert tl.iteration == 0
    assert all(torch.equal(a, b) for a, b in zip(before, tl.model.parameters(), strict=True))


def test_callback_class_instead_of_instance_gets_a_hint() -> None:
    from aitoolbox.loop.callbacks import EarlyStopping

    with pytest.raises(LoopConfigError, match=r"pass an instance: MyCallback\(\)"):
        _tl().fit(num_epochs=1, callbacks=[EarlyStopping])  # type: ignore[list-item]


def test_empty_train_loader_is_rejected() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(LoopConfigError, match="train_loader is empty"):
        _tl(train_loader=empty).fit(num_epochs=1)
    drop_all = DataLoader(make_classification_data(3), batch_size=4, drop_last=True)
    with pytest.raises(LoopConfigError, match="drop_last"):
        _tl(train_loader=drop_all).fit(num_epochs=1)


def test_empty_iterable_loader_is_rejected_after_first_epoch() -> None:
    class Empty:
        def __iter__(self):
            return iter(())

    with pytest.raises(LoopConfigError, match="yielded no batches in epoch 0"):
        _tl(train_loader=Empty()).fit(num_epochs=1)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"criterion": "mse"}, LoopConfigError, "criterion must be callable"),
        ({"model": nn.Linear(8, 3), "criterion": None}, LoopConfigError, "criterion is None but Linear"),
        ({"use_amp": "int8"}, LoopConfigError, "use_amp must be False, True, 'bf16' or 'fp16'"),
        ({"use_amp": {"precision": 16}}, LoopConfigError, "use_amp dict accepts the keys"),
        ({"optimizer": "adam"}, LoopConfigError, "optimizer must be a torch.optim.Optimizer"),
        ({"train_loader": None}, LoopConfigError, "train_loader must be a DataLoader"),
        ({"validation_loader": 3}, LoopConfigError, "validation_loader must be a DataLoader or None"),
        ({"device": "tpu:x"}, LoopConfigError, "device must be e.g. 'cpu'"),
        ({"gpu_mode": "tpu"}, LoopConfigError, "gpu_mode must be 'single' or 'ddp', got 'tpu'"),
        ({"gpu_mode": "dp"}, LoopConfigError, r"gpu_mode='dp' \(torch.nn.DataParallel\) is not supported"),
        ({"num_processes": 0}, LoopConfigError, "num_processes must be an int >= 1, got 0"),
        ({"ddp_options": ["x"]}, LoopConfigError, "ddp_options must be a dict"),
        ({"progress_bar": "yes"}, LoopConfigError, "progress_bar must be True, False or None"),
        ({"prefetch": "auto"}, LoopConfigError, "prefetch must be True or False"),
    ],
)
def test_bad_constructor_arguments(overrides: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _tl(**overrides)


def test_optimizer_of_another_model_is_rejected() -> None:
    other = TinyClassifier()
    with pytest.raises(LoopConfigError, match="holds none of the model's parameters"):
        _tl(optimizer=optim.SGD(other.parameters(), lr=0.1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_cuda_device_without_cuda_is_rejected() -> None:
    with pytest.raises(LoopConfigError, match="CUDA is not available here; use device='cpu'"):
        _tl(device="cuda")


def test_nan_loss_is_reported_with_its_epoch(caplog: pytest.LogCaptureFixture) -> None:
    model = TinyClassifier()
    x, y = make_classification_data(32).tensors
    x = x.clone()
    x[20] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    with caplog.at_level(logging.WARNING, logger="aitoolbox.loop"):
        tl.fit(num_epochs=1)
    assert "epoch 0: the training loss is nan; add TerminateOnNaN()" in caplog.text


def test_errors_inside_training_are_logged_and_reraised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(TinyClassifier):
        def get_loss(self, batch, criterion, device):
            raise RuntimeError("boom")

    model = Broken()
    tl = TrainLoop(model, make_classification_loader(16), None, None, optim.SGD(model.parameters(), 0.1), None)
    with caplog.at_level(logging.ERROR, logger="aitoolbox.loop"), pytest.raises(RuntimeError, match="boom"):
        tl.fit(num_epochs=1)
    assert "training failed in epoch 0 at iteration 0" in caplog.text
