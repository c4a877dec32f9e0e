"""``fastcollate.slot_loader``: workers collate into shared slots the main process owns.

Every test compares with the stock DataLoader on the same data, checks that slots were really used where they
should be, and (the autouse fixture) that no slot file of this process is left in the shared-memory directory.
"""

from __future__ import annotations

import gc
import glob
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any

import _slot_data as data
import pytest
import torch
from _compare import assert_same
from hypothesis import HealthCheck, given, settings
from test_collate import batches
from torch.utils.data import DataLoader, default_collate
from torch.utils.data._utils import signal_handling

import fastcollate
from fastcollate import _arena, _slots


def _files(pid: int | None = None) -> list[str]:
    return glob.glob(os.path.join(_arena.shm_dir(), f"{_arena.NAME}.{pid or os.getpid()}.*"))


@pytest.fixture
def worker_log() -> Iterator[None]:
    """Workers' fastcollate warnings on file descriptor 2 (pytest's logging capture would keep them in the worker)."""
    handler = logging.StreamHandler(_Fd2())
    logger = logging.getLogger("fastcollate")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Fd2:
    """Writes to whatever file descriptor 2 is when a record is emitted (in a worker: what it inherited)."""

    def write(self, text: str) -> None:
        os.write(2, text.encode())

    def flush(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_leak() -> Iterator[None]:
    yield
    gc.collect()
    assert _files() == [], "slot files outlived their loader"


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from _tensors(value)


def _slotted(batch: Any) -> list[bool]:
    return [_arena.slot_of(t) is not None for t in _tensors(batch)]


def _compare(fast: DataLoader[Any], stock: DataLoader[Any], *, skip: int = 0) -> list[list[bool]]:
    """Iterates both in step, asserting equal batches; returns, per batch after the first ``skip``, whether each
    tensor came in a slot (checked while the arena is alive). A new arena's slots are sized from the first batch's
    samples, so every batch of equal-shaped samples counts; padded ones skip each worker's first batch."""
    seen = []
    for i, (got, expected) in enumerate(zip(fast, stock, strict=True)):
        assert_same(got, expected, f"batch {i}")
        if i >= skip:
            seen.append(_slotted(got))
    return seen


@pytest.mark.parametrize("kind", ["tuple", "dict", "namedtuple", "numpy"])
def test_batches_come_in_slots_equal_to_default_collate(kind: str) -> None:
    stock = DataLoader(data.Numbered(96, kind), batch_size=8, num_workers=2)
    seen = _compare(fastcollate.slot_loader(stock), stock)
    assert seen and all(all(flags) for flags in seen), seen


def test_pad_collate_batches_come_in_slots() -> None:
    stock = DataLoader(data.Numbered(64, "sequence"), batch_size=8, num_workers=2, collate_fn=fastcollate.pad_collate)
    fast = fastcollate.slot_loader(stock)
    assert fast.collate_fn is fastcollate.pad_collate
    seen = _compare(fast, stock, skip=2)  # a padded batch can be longer than its first sample tells
    assert seen and all(all(flags) for flags in seen), seen


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_generated_batches_equal_default_collate_through_workers(batch: list[object]) -> None:
    expected = default_collate(batch)
    loader = DataLoader(data.Items([batch] * 4), batch_size=None, num_workers=2, collate_fn=default_collate)
    for got in fastcollate.slot_loader(loader):
        assert_same(got, expected)


def test_kept_batches_are_never_overwritten_and_the_rest_take_the_stock_path(
    capfd: pytest.CaptureFixture[str], worker_log: None
) -> None:
    stock = DataLoader(data.Numbered(8 * 40), batch_size=8, num_workers=2)
    kept, slotted = [], []
    for x, y in fastcollate.slot_loader(stock):
        kept.append((x, y))
        slotted.append(_arena.slot_of(x) is not None)
    for i, (x, y) in enumerate(kept):  # every batch still holds its own samples
        assert torch.equal(y, torch.arange(8 * i, 8 * i + 8))
        assert torch.equal(x, y.float()[:, None].expand(8, 4096))
    slots = 2 * (2 + _arena.EXTRA_SLOTS)
    assert 0 < sum(slotted) <= slots and not all(slotted[-10:])
    assert "every shared slot holds a batch" in capfd.readouterr().err


def test_a_freed_batch_frees_its_slot_and_each_worker_reuses_its_own_slots() -> None:
    """Batch i comes from worker i % 2; with nothing kept, each worker finds one of its own slots free (mapping
    another worker's slot costs a page-table fill)."""
    stock = DataLoader(data.Numbered(8 * 60), batch_size=8, num_workers=2)
    share = 2 + _arena.EXTRA_SLOTS
    used: dict[int, set[int]] = {0: set(), 1: set()}
    for i, (x, _) in enumerate(fastcollate.slot_loader(stock)):
        k = _arena.slot_of(x)
        assert k is not None, f"batch {i} missed a slot although no batch is kept"
        used[i % 2].add(k)
    assert used[0] <= set(range(share)) and used[1] <= set(range(share, 2 * share)), used


def _states(arena: _arena.Arena) -> list[int]:
    return [arena.state.load(k * _arena.STRIDE) for k in range(arena.slots)]


def test_the_arena_outlives_its_iterators_until_the_loader_is_freed() -> None:
    """Epochs without persistent workers (a new iterator, new workers each) keep the loader's arena: same files,
    slots already sized and mapped, every batch of every epoch in a slot. ``release_slots`` frees it at once; the
    next epoch makes a new arena as large."""
    stock = DataLoader(data.Numbered(8 * 12, "dict"), batch_size=8, num_workers=2)
    fast = fastcollate.slot_loader(stock)
    arenas = []
    for _ in range(3):
        seen = _compare(fast, stock)
        assert seen and all(all(flags) for flags in seen), seen
        arenas.append(fast._slot_arena)
        assert _files() and _states(fast._slot_arena) == [_arena.FREE] * fast._slot_arena.slots
    assert arenas[0] is arenas[1] is arenas[2]
    hint = arenas[0].hint
    fast.release_slots()
    assert _files() == [] and arenas[0].closed
    seen = _compare(fast, stock)
    assert all(all(flags) for flags in seen) and fast._slot_arena is not arenas[0]
    assert fast._slot_arena.hint == hint
    del fast
    gc.collect()
    assert _files() == []


def test_batches_prefetched_by_an_epoch_cut_short_free_their_slots() -> None:
    """A ``break`` leaves batches claimed by the workers that the main process never receives: once the iterator's
    workers are gone their slots are free again (not lost for the rest of the run)."""
    fast = fastcollate.slot_loader(DataLoader(data.Numbered(8 * 40), batch_size=8, num_workers=2))
    for _ in range(3):
        it = iter(fast)
        batch = next(it)
        assert _arena.slot_of(batch[0]) is not None
        del batch
        for _ in range(3000):  # the workers go on with the prefetched batches, which nobody receives
            if _arena.BUSY in _states(fast._slot_arena):
                break
            time.sleep(0.01)
        assert _arena.BUSY in _states(fast._slot_arena), "no batch was in flight: the test would prove nothing"
        del it
        gc.collect()
        assert _states(fast._slot_arena) == [_arena.FREE] * fast._slot_arena.slots
    seen = _compare(fast, DataLoader(data.Numbered(8 * 40), batch_size=8, num_workers=2))
    assert all(all(flags) for flags in seen), seen


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_start_method(method: str) -> None:
    stock = DataLoader(data.Numbered(64, "dict"), batch_size=8, num_workers=2, multiprocessing_context=method)
    seen = _compare(fastcollate.slot_loader(stock), stock)
    assert all(all(flags) for flags in seen), seen


def test_loader_options_are_kept() -> None:
    options: dict[str, Any] = {
        "batch_size": 5,
        "num_workers": 2,
        "persistent_workers": True,
        "prefetch_factor": 4,
        "worker_init_fn": data.mark_worker,
        "timeout": 60,
        "drop_last": True,
    }
    stock = DataLoader(data.Noisy(), **options)
    fast = fastcollate.slot_loader(stock)
    assert len(fast) == len(stock) == 6
    for _ in range(2):  # the persistent workers (and their arena) serve both epochs
        seen = _compare(fast, stock)
        assert all(all(flags) for flags in seen), seen
    assert fast._iterator is not stock._iterator
    del fast, stock


def test_an_iterable_dataset_sharded_by_the_workers() -> None:
    stock = DataLoader(data.Stream(100), batch_size=4, num_workers=2)
    got = [(x.clone(), y) for x, y in fastcollate.slot_loader(stock)]
    expected = list(stock)
    assert len(got) == len(expected)
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(gy, ey) and torch.equal(gx, ex)


def test_a_ragged_batch_fails_as_default_collate_fails() -> None:
    stock = DataLoader(data.Ragged(), batch_size=4, num_workers=1)
    with pytest.raises(RuntimeError) as expected:
        list(stock)
    with pytest.raises(RuntimeError) as got:
        list(fastcollate.slot_loader(stock))
    got_lines, expected_lines = str(got.value).splitlines(), str(expected.value).splitlines()
    assert (got_lines[0], got_lines[-1]) == (expected_lines[0], expected_lines[-1])  # the tracebacks differ
    assert "stack expects each tensor to be equal size" in str(got.value)


def test_a_custom_collate_fn_works_the_usual_way() -> None:
    def first_only(batch: list[Any]) -> Any:
        return default_collate(batch)[0]

    stock = DataLoader(data.Numbered(32), batch_size=8, num_workers=2, collate_fn=first_only)
    seen = _compare(fastcollate.slot_loader(stock), stock)
    assert not any(any(flags) for flags in seen)


def test_a_worker_that_dies_raises_what_the_dataloader_raises() -> None:
    """torch's SIGCHLD handler is replaced by a no-op meanwhile: it raises wherever the main process happens to be,
    even inside pytest.raises' own exit or while a queue's lock is held (blocking the signal is not enough: threads
    started earlier, e.g. OpenMP's, still take it). The DataLoader then finds the dead worker by its status check
    (every 5 s). The stock loader's worker dies on its first sample: one that dies with batches still queued can
    make the stock loader raise ConnectionResetError instead (the dead worker cannot hand over their file
    descriptors), a race slot batches do not have, so the slot loader's worker dies mid-stream."""
    died = r"DataLoader worker \(pid.*\) exited unexpectedly"
    signal_handling._set_SIGCHLD_handler()  # torch's, set once per process (as the first iterator does)
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    try:
        for loader in (
            DataLoader(data.KillsItsWorker(at=0), batch_size=4, num_workers=2),
            fastcollate.slot_loader(DataLoader(data.KillsItsWorker(at=40), batch_size=4, num_workers=2)),
        ):
            it, slotted = iter(loader), []
            with pytest.raises(RuntimeError, match=died):
                for x in it:
                    slotted.append(_arena.slot_of(x) is not None)
            assert any(slotted) == isinstance(loader, fastcollate.SlotDataLoader)
            it._shutdown_workers()  # what freeing it does; its workers' pids leave torch's SIGCHLD check
            del it
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_an_exception_in_the_training_code_leaves_no_slot_file() -> None:
    stock = DataLoader(data.Numbered(64), batch_size=4, num_workers=2)
    with pytest.raises(ZeroDivisionError):
        for i, _ in enumerate(fastcollate.slot_loader(stock)):
            if i == 5:
                assert _files()
                raise ZeroDivisionError


def test_an_iterator_freed_by_the_cyclic_collector_shuts_its_workers_down_and_removes_its_files() -> None:
    """The collector clears weak references before it runs ``__del__``: nothing on the shutdown path may need one."""
    it = iter(fastcollate.slot_loader(DataLoader(data.Numbered(64), batch_size=4, num_workers=2)))
    for _ in range(3):
        next(it)
    workers = list(it._workers)
    cycle: list[Any] = [it]
    cycle.append(cycle)  # the iterator now lives only in a reference cycle
    del it, cycle
    assert _files()
    gc.collect()
    assert _files() == []
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


def test_slot_files_of_a_main_process_killed_by_sigkill_are_removed_at_the_next_start(tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import _slot_data as data, fastcollate
        from torch.utils.data import DataLoader
        for i, _ in enumerate(fastcollate.slot_loader(DataLoader(data.Numbered(64), batch_size=4, num_workers=2))):
            if i == 4:
                print(os.getpid(), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    pid = int(run.stdout.split()[0])
    assert _files(pid), "the killed process left nothing to sweep: the test would prove nothing"
    stock = DataLoader(data.Numbered(16), batch_size=4, num_workers=1)
    for _ in fastcollate.slot_loader(stock):
        assert _files(pid) == []


def test_too_little_shared_memory_gives_a_clear_message_and_the_stock_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], worker_log: None
) -> None:
    small = tmp_path / "shm"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        monkeypatch.setenv("FASTCOLLATE_SHM_DIR", str(small))
        stock = DataLoader(data.Numbered(64, features=65536), batch_size=8, num_workers=2)  # 2 MiB batches
        seen = _compare(fastcollate.slot_loader(stock), stock)
        assert not any(any(flags) for flags in seen)
        err = capfd.readouterr().err
        assert "no room in" in err and "--shm-size" in err, err
        gc.collect()
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_without_a_shared_memory_directory_the_loader_warns_and_takes_the_stock_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTCOLLATE_SHM_DIR", str(tmp_path / "missing"))
    monkeypatch.setattr(_arena, "_warned", set())
    stock = DataLoader(data.Numbered(32), batch_size=8, num_workers=2)
    with pytest.warns(RuntimeWarning, match="cannot create the slot arena"):
        seen = _compare(fastcollate.slot_loader(stock), stock)
    assert not any(any(flags) for flags in seen)


def test_num_workers_0_is_the_main_process_collation() -> None:
    stock = DataLoader(data.Numbered(32), batch_size=8)
    for got, expected in zip(fastcollate.slot_loader(stock), stock, strict=True):
        assert_same(got, expected)
    assert _files() == []


def test_only_plain_dataloaders_are_taken() -> None:
    class Mine(DataLoader):  # type: ignore[type-arg]
        pass

    with pytest.raises(TypeError, match="subclass keeps its own iterators"):
        fastcollate.slot_loader(Mine(data.Numbered(8)))
    with pytest.raises(TypeError, match="takes a torch.utils.data.DataLoader"):
        fastcollate.slot_loader([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="collate_fn must be a callable"):
        fastcollate.slot_loader(DataLoader(data.Numbered(8), num_workers=1), collate_fn=3)  # type: ignore[arg-type]


def test_a_slot_batch_unpickled_outside_its_arena_is_refused() -> None:
    with pytest.raises(RuntimeError, match="does not own that arena"):
        _arena._unpack("/dev/shm/fastcollate-slots.1.gone", 0, 64, b"")


def test_the_original_loader_is_left_as_it_is() -> None:
    stock = DataLoader(data.Numbered(16), batch_size=8, num_workers=1)
    fast = fastcollate.slot_loader(stock)
    assert type(stock) is DataLoader and stock.collate_fn is default_collate
    assert isinstance(fast, fastcollate.SlotDataLoader) and fast.collate_fn is _slots.lenient_collate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(fast)) == 2
