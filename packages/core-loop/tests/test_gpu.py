"""CUDA paths: side-stream prefetching, fp16 with GradScaler, and no host-device sync inside the training steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from aitoolbox.loop import TrainLoop
from aitoolbox.loop._device import CudaPrefetcher
from aitoolbox.loop.callbacks import Callback, GradNormClip, TerminateOnNaN
from aitoolbox.loop.testing import TinyClassifier, make_classification_data, make_classification_loader

pytestmark = pytest.mark.gpu


def test_prefetcher_yields_the_loader_batches_on_the_device() -> None:
    loader = make_classification_loader(100, batch_size=16, pin_memory=True)
    device = torch.device("cuda", 0)
    got = list(CudaPrefetcher(loader, device))
    want = list(loader)
    assert len(got) == len(want) == 7
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert gx.is_cuda and gy.is_cuda
        assert torch.equal(gx.cpu(), wx) and torch.equal(gy.cpu(), wy)


def test_cuda_training_matches_a_hand_written_cuda_loop() -> None:
    data = make_classification_data(256)
    loader = DataLoader(data, batch_size=32, pin_memory=True)
    device = torch.device("cuda", 0)

    torch.manual_seed(0)
    ref = TinyClassifier().to(device)
    opt = optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        for x, y in loader:
            loss = nn.CrossEntropyLoss()(ref(x.to(device)), y.to(device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    model = TinyClassifier()
    tl = TrainLoop(
        model, loader, loader, None, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()
    )
    assert tl.device.type == "cuda"  # chosen automatically
    tl.fit(num_epochs=3)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


class NoSyncInSteps(Callback):
    """Turns CUDA's sync debug mode to 'error' from the first batch to the end of the last batch of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_batch_begin(self) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_batch_end(self) -> None:
        self.batches += 1
        if self.batches % len(self.train_loop_obj.train_loader) == 0:
            torch.cuda.set_sync_debug_mode("default")  # the epoch-end read of the loss is the one sync allowed


@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature:UserWarning")
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("amp", [False, "bf16", "fp16"])
def test_training_steps_never_sync_with_the_host(amp: object, prefetch: bool) -> None:
    data = make_classification_data(512)
    loader = DataLoader(data, batch_size=64, pin_memory=True)
    model = TinyClassifier()
    probe = NoSyncInSteps()
    # fp16's GradScaler reads found_inf on the host at every step unless the optimizer is fused (torch's own sync)
    opt = optim.Adam(model.parameters(), lr=1e-2, fused=amp == "fp16")
    tl = TrainLoop(model, loader, loader, None, opt, nn.CrossEntropyLoss(), use_amp=amp, prefetch=prefetch)
    try:
        tl.fit(num_epochs=2, callbacks=[probe], grad_accumulation=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert probe.batches == 16
    assert tl.train_history["loss"][-1] < tl.train_history["loss"][0]


def test_fp16_uses_a_grad_scaler_and_unscales_before_clipping() -> None:
    model = TinyClassifier()
    loader = make_classification_loader(512, batch_size=64, shuffle=True, pin_memory=True)
    tl = TrainLoop(
        model, loader, loader, None, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(), use_amp=True
    )
    assert tl.amp.dtype == torch.float16 and tl.grad_scaler is not None

    norms: list[float] = []

    class Probe(Callback):
        def __init__(self) -> None:
            super().__init__(execution_order=10)

        def on_after_gradient_update(self, optimizer_idx: int) -> None:
            grads = [p.grad for p in self.train_loop_obj.model.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    tl.fit(num_epochs=4, callbacks=[GradNormClip(0.5), Probe()])
    assert max(norms) <= 0.5 + 1e-3  # unscaled, then clipped: the scale factor (65536) would show otherwise
    assert tl.train_history["val_loss"][-1] < tl.train_history["val_loss"][0]


def test_terminate_on_nan_on_cuda_names_the_iteration() -> None:
    x, y = make_classification_data(640).tensors
    x = x.clone()
    x[300] = float("nan")  # batch 9 of batch size 32
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = TinyClassifier()
    tl = TrainLoop(model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    tl.fit(num_epochs=2, callbacks=[TerminateOnNaN(check_every=8)])
    assert tl.stop_reason == "non-finite loss nan in epoch 0 at iteration 9"
    assert tl.iteration == 16


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("prefetch", [True, False])
def test_every_prefetch_mode_trains_the_same(prefetch: bool, pinned: bool) -> None:
    loader = make_classification_loader(256, batch_size=32, pin_memory=pinned)
    torch.manual_seed(0)
    model = TinyClassifier()
    tl = TrainLoop(
        model, loader, None, None, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), prefetch=prefetch
    )
    tl.fit(num_epochs=2)
    torch.manual_seed(0)
    ref = TinyClassifier()
    TrainLoop(ref, loader, None, None, optim.SGD(ref.parameters(), lr=0.1), nn.CrossEntropyLoss(), prefetch=False).fit(
        num_epochs=2
    )
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
