"""Elastic data order: batches that depend only on (seed, epoch, global step), whatever the number of processes, and
the data-order log that proves which samples each optimizer step trained on.

A checkpoint taken inside an epoch by N processes resumes on M processes (any M that divides the global batch) with
every sample of the epoch trained exactly once: the loop counts its position in global steps, and rank ``r`` of ``W``
takes its slice of each global batch. torch's ``DistributedSampler`` cannot do this (its shards depend on the world
size), so a mid-epoch resume on another world size with it is refused.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Iterator, Sized
from typing import Any

import torch

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["GENESIS", "DataOrderLog", "ElasticSampler", "chain_step", "elastic_sampler", "le_int64"]

#: the data-order chain's value before the first step
GENESIS = bytes(32)


class ElasticSampler(torch.utils.data.Sampler[list[int]]):
    """A batch sampler over global batches of ``global_batch_size`` samples: pass it as
    ``DataLoader(dataset, batch_sampler=ElasticSampler(dataset, global_batch_size=G))``.

    Each epoch's order is drawn from ``(seed, epoch)`` only: a permutation (``shuffle=True``), the dataset order
    (``shuffle=False``), or ``num_samples`` draws from ``weights`` (a weighted sampler, ``torch.multinomial``). The
    order is cut into global batches; the :class:`~aitoolbox.loop.TrainLoop` gives rank ``r`` of a ``W``-process run
    with ``grad_accumulation=A`` its ``A`` micro-batches of ``G / (W * A)`` samples of each global batch (``W * A``
    must divide ``G``). So one optimizer step trains on the same ``G`` samples however many processes run, a
    mid-epoch checkpoint resumes exactly on another world size, and with a mean-reduced loss the weights match the
    one-process run up to floating-point reduction order.

    Args:
        data_source: the dataset (or its length).
        global_batch_size: samples per optimizer step, over every process and micro-batch.
        shuffle: a new permutation each epoch (from ``seed + epoch``).
        seed: the shuffling seed; the same in every process and every resume.
        drop_last: drop the epoch's last, partial global batch; otherwise it is filled up with the epoch's first
            samples (as ``DistributedSampler`` pads), so every step has ``G`` samples.
        weights: sample with these weights (``torch.multinomial``) instead of permuting.
        num_samples: draws per epoch with ``weights`` (default: the dataset length).
        replacement: draw with replacement (with ``weights``).
        log_order: keep the data-order log (a SHA-256 chain of every step's global sample indices, in the loop state,
            each checkpoint and the experiment folder); ``False`` turns it off.
        log_every: the experiment folder's ``data_order.json`` marks the chain (and the step's loss) every this many
            steps.

    Example:
        >>> s = ElasticSampler(10, global_batch_size=4, shuffle=False)
        >>> list(s)  # one process, no accumulation: the global batches, the last one filled up
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
        >>> list(s.shard(rank=1, world_size=2, accumulation=1))  # rank 1 of 2: its half of each
        [[2, 3], [6, 7], [0, 1]]
    """

    def __init__(
        self,
        data_source: Sized | int,
        global_batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        weights: Any = None,
        num_samples: int | None = None,
        replacement: bool = True,
        log_order: bool = True,
        log_every: int = 100,
    ) -> None:
        n = data_source if isinstance(data_source, int) else len(data_source)
        if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or global_batch_size < 1:
            raise LoopConfigError(f"global_batch_size must be a positive int, got {global_batch_size!r}")
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.double)
            if weights.ndim != 1 or weights.numel() != n:
                raise LoopConfigError(f"weights must be one value per sample ({n}), got shape {tuple(weights.shape)}")
            n = int(num_samples) if num_samples is not None else n
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise LoopConfigError(f"log_every must be a positive int, got {log_every!r}")
        if n < 1 or (drop_last and n < global_batch_size):
            raise LoopConfigError(
                f"an epoch of {n} samples has no full global batch of {global_batch_size}"
                + ("; pass drop_last=False or a smaller global_batch_size" if drop_last else "")
            )
        self.length, self.global_batch_size = n, global_batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.weights, self.replacement = weights, replacement
        self.log_order, self.log_every = log_order, log_every
        self.epoch = 0
        self.rank, self.world_size, self.accumulation = 0, 1, 1
        self._order: tuple[int, torch.Tensor] | None = None

    @property
    def steps(self) -> int:
        """Global batches (optimizer steps) per epoch."""
        g = self.global_batch_size
        return self.length // g if self.drop_last else math.ceil(self.length / g)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` yields (the loop calls it at every epoch start)."""
        self.epoch = epoch

    def shard(self, rank: int, world_size: int, accumulation: int) -> ElasticSampler:
        """A copy that yields rank ``rank``'s micro-batches of each global batch (``accumulation`` per step)."""
        g, parts = self.global_batch_size, world_size * accumulation
        if g % parts:
            raise LoopConfigError(
                f"ElasticSampler(global_batch_size={g}) cannot be split over {world_size} process(es) x "
                f"grad_accumulation={accumulation}: their product must divide it (choose a global batch that "
                f"{world_size} x {accumulation} = {parts} divides, or another grad_accumulation)"
            )
        clone = object.__new__(ElasticSampler)
        clone.__dict__.update(self.__dict__)
        clone.rank, clone.world_size, clone.accumulation = rank, world_size, accumulation
        return clone

    def epoch_order(self) -> torch.Tensor:
        """The epoch's global sample indices (int64, ``steps * G`` of them), computed once per epoch."""
        if self._order is not None and self._order[0] == self.epoch:
            return self._order[1]
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, self.replacement, generator=gen)
        elif self.shuffle:
            order = torch.randperm(self.length, generator=gen)
        else:
            order = torch.arange(self.length)
        total = self.steps * self.global_batch_size
        if total > len(order):  # fill the last global batch up with the epoch's first samples
            order = torch.cat([order] * math.ceil(total / len(order)))
        order = order[:total].contiguous()
        self._order = (self.epoch, order)
        return order

    def spec(self) -> dict[str, Any]:
        """What decides the order (with the epoch), as plain data: enough to recompute it, weights aside."""
        return {
            "length": self.length,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "weighted": self.weights is not None,
            "replacement": self.replacement,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ElasticSampler:
        """The sampler :meth:`spec` describes (not for a weighted one: its weights are not in the spec)."""
        if spec["weighted"]:
            raise LoopConfigError(
                "a weighted ElasticSampler cannot be rebuilt from its spec (the weights are not in it)"
            )
        keys = ("shuffle", "seed", "drop_last")
        return cls(spec["length"], spec["global_batch_size"], **{k: spec[k] for k in keys})

    def global_batch(self, step: int) -> torch.Tensor:
        """The global sample indices of the epoch's step ``step`` (0-based)."""
        g = self.global_batch_size
        return self.epoch_order()[step * g : (step + 1) * g]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order()
        g, acc = self.global_batch_size, self.accumulation
        micro = g // (self.world_size * acc)
        mine = order.view(self.steps, self.world_size, acc, micro)[:, self.rank]  # steps x acc x micro
        for step in mine.tolist():
            yield from step

    def __len__(self) -> int:
        return self.steps * self.accumulation


def elastic_sampler(loader: object) -> ElasticSampler | None:
    """The loader's :class:`ElasticSampler` (its batch sampler), if it has one."""
    found = getattr(loader, "batch_sampler", None)
    return found if isinstance(found, ElasticSampler) else None


def le_int64(indices: torch.Tensor) -> bytes:
    """``indices`` as little-endian int64 bytes (without numpy, which torch does not require)."""
    packed = array("q", indices.tolist())
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def chain_step(chain: bytes, indices: torch.Tensor) -> bytes:
    """The data-order chain after a step over ``indices``: ``sha256(chain || indices as little-endian int64)``."""
    return hashlib.sha256(chain + le_int64(indices)).digest()


class DataOrderLog:
    """A running SHA-256 chain over the global sample indices of every optimizer step (:func:`chain_step`, from 32
    zero bytes).

    Two runs with equal chains at step ``s`` trained on the same samples, in the same steps, up to ``s``. The loop
    keeps the chain and its step count in its state (so in every checkpoint). With ``keep_marks`` (the experiment
    folder sets it on the writing process) it also marks the chain every ``log_every`` steps, with the step's last
    micro-batch loss (kept on its device until written): the experiment folder's ``data_order.json``.
    """

    __slots__ = ("chain", "every", "keep_marks", "marks", "order", "sampler", "span", "spec", "step_in_epoch", "steps")

    def __init__(self) -> None:
        self.chain = GENESIS
        self.steps = 0
        self.every = 100
        self.keep_marks = False
        self.marks: list[tuple[int, int, str, Any]] = []  # (step, epoch, chain hex, loss tensor)
        self.sampler: ElasticSampler | None = None
        self.spec: dict[str, Any] | None = None
        self.step_in_epoch = 0
        self.order = memoryview(b"")  # the epoch's indices as little-endian int64 bytes
        self.span = 0  # bytes per global batch

    def begin_epoch(self, sampler: ElasticSampler, step_in_epoch: int) -> None:
        self.sampler, self.step_in_epoch = sampler, step_in_epoch
        self.every, self.spec = sampler.log_every, sampler.spec()
        self.order = memoryview(le_int64(sampler.epoch_order()))  # once an epoch
        self.span = 8 * sampler.global_batch_size

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step done: chain its global batch's indices (``loss``: its last micro-batch's). The
        same value as :func:`chain_step`, hashed from the epoch's bytes without a tensor per step."""
        start = self.step_in_epoch * self.span
        h = hashlib.sha256(self.chain)
        h.update(self.order[start : start + self.span])
        self.chain = h.digest()
        self.step_in_epoch += 1
        self.steps += 1
        if self.keep_marks and self.steps % self.every == 0:
            epoch = self.sampler.epoch if self.sampler is not None else 0
            self.marks.append((self.steps, epoch, self.chain.hex(), loss.detach()))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "sha256": self.chain.hex()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a saved chain (``None``: from the start)."""
        self.steps, self.chain = (
            (0, GENESIS) if state is None else (int(state["steps"]), bytes.fromhex(state["sha256"]))
        )
        self.marks.clear()

    def take_marks(self) -> list[dict[str, Any]]:
        """The marks since the last call, as rows (losses read now: one host read per mark)."""
        rows = [{"step": s, "epoch": e, "sha256": h, "loss": float(loss)} for s, e, h, loss in self.marks]
        self.marks.clear()
        return rows
