"""pad_collate against the usual Python collate_fn built on pad_sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

import fastcollate


def reference(seqs: list[torch.Tensor], pad_value: float = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    data = pad_sequence(seqs, batch_first=True, padding_value=pad_value)
    lengths = torch.tensor([len(s) for s in seqs])
    mask = torch.arange(data.shape[1])[None, :] < lengths[:, None]
    return data, lengths, mask


def assert_padded(got: fastcollate.PaddedBatch, expected: tuple[torch.Tensor, ...]) -> None:
    assert isinstance(got, fastcollate.PaddedBatch)
    for name, g, e in zip(("data", "lengths", "mask"), got, expected, strict=True):
        assert (g.dtype, g.shape) == (e.dtype, e.shape), (
            f"{name}: {g.dtype}{tuple(g.shape)} vs {e.dtype}{tuple(e.shape)}"
        )
        assert torch.equal(g, e), name


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.float16, torch.bool, torch.uint8])
@pytest.mark.parametrize("features", [(), (3,), (2, 5)])
def test_equals_pad_sequence(dtype: torch.dtype, features: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(0, 40, (17,), generator=g).tolist()
    lengths[3] = 40
    seqs = [(torch.randn((n, *features), generator=g) * 9).to(dtype) for n in lengths]
    for pad_value in (0, 1):
        assert_padded(fastcollate.pad_collate(seqs, pad_value), reference(seqs, pad_value))


def test_the_issue_workload_and_many_threads() -> None:
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 30000, (int(n),), generator=g) for n in torch.randint(16, 513, (64,), generator=g)]
    assert_padded(fastcollate.pad_collate(seqs), reference(seqs))
    long = [torch.randn(int(n), 256, generator=g) for n in torch.randint(100, 2000, (32,), generator=g)]
    fastcollate.set_num_threads(4)
    try:
        assert_padded(fastcollate.pad_collate(long, -1.0), reference(long, -1.0))  # ~30 MB: several threads
    finally:
        fastcollate.set_num_threads(None)


def test_negative_pad_value_and_multiple_of() -> None:
    out = fastcollate.pad_collate([torch.tensor([1, 2, 3]), torch.tensor([4])], -100, pad_to_multiple_of=8)
    assert out.data.tolist() == [[1, 2, 3] + [-100] * 5, [4] + [-100] * 7]
    assert out.mask.sum(1).tolist() == [3, 1] and out.lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int"):
        fastcollate.pad_collate([torch.zeros(2)], pad_to_multiple_of=0)


def test_structured_samples_pad_sequences_and_collate_the_rest() -> None:
    samples = [{"tokens": torch.arange(n), "label": n % 2, "text": str(n)} for n in (3, 5, 1)]
    out = fastcollate.pad_collate(samples)
    assert set(out) == {"tokens", "label", "text"}
    assert_padded(out["tokens"], reference([s["tokens"] for s in samples]))
    assert out["label"].tolist() == [1, 1, 1] and out["text"] == ["3", "5", "1"]
    pairs = [(np.arange(n, dtype=np.int32), torch.tensor(float(n))) for n in (2, 4)]
    seqs, scalars = fastcollate.pad_collate(pairs)
    assert_padded(seqs, reference([torch.from_numpy(p[0]) for p in pairs]))
    assert scalars.tolist() == [2.0, 4.0]


def test_non_contiguous_sequences_are_copied_correctly() -> None:
    base = torch.arange(60).view(6, 10)
    seqs = [base[:, i][: i + 1] for i in range(5)]  # strided columns
    assert all(not s.is_contiguous() for s in seqs[1:])
    assert_padded(fastcollate.pad_collate(seqs), reference(seqs))


def test_errors_name_the_sample() -> None:
    with pytest.raises(fastcollate.CollateShapeError, match=r"sample 1 has shape \(2, 4\) but sample 0 has \(3, 5\)"):
        fastcollate.pad_collate([torch.zeros(3, 5), torch.zeros(2, 4)])
    message = "sample 2 has dtype torch.float32 but sample 0 has torch.int64"
    with pytest.raises(fastcollate.CollateDtypeError, match=message):
        fastcollate.pad_collate([torch.zeros(3, dtype=torch.int64)] * 2 + [torch.zeros(3)])
    with pytest.raises(fastcollate.CollateTypeError, match="sample 1 is a list"):
        fastcollate.pad_collate([torch.zeros(3), [1, 2]])


@pytest.mark.parametrize(
    ("dtype", "pad_value"),
    [
        (torch.uint8, 300),
        (torch.uint8, -1),
        (torch.int64, float("nan")),
        (torch.int32, 1.5),
        (torch.bool, 2),
        (torch.float16, 1e6),
        (torch.int8, "x"),
    ],
)
def test_a_pad_value_the_dtype_cannot_hold_is_refused(dtype: torch.dtype, pad_value: object) -> None:
    """Before, the cast wrapped it: 300 became 44 in uint8, NaN became INT64_MIN."""
    with pytest.raises(fastcollate.CollateDtypeError, match="cannot be stored in|must be a number"):
        fastcollate.pad_collate([torch.ones(3, dtype=dtype), torch.ones(1, dtype=dtype)], pad_value=pad_value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "pad_value"),
    [
        (torch.uint8, 255),
        (torch.int64, -(2**63)),
        (torch.float32, float("nan")),
        (torch.float16, float("-inf")),
        (torch.bool, True),
        (torch.int32, 7.0),
    ],
)
def test_every_value_the_dtype_holds_is_padded_exactly(dtype: torch.dtype, pad_value: float) -> None:
    seqs = [torch.ones(3, dtype=dtype), torch.ones(1, dtype=dtype)]
    got = fastcollate.pad_collate(seqs, pad_value=pad_value)
    if pad_value != pad_value:  # NaN: equal to nothing, itself included
        assert torch.isnan(got.data[1, 1:]).all() and torch.equal(got.data[:, :1], torch.ones(2, 1))
    else:
        assert_padded(got, reference(seqs, pad_value))
