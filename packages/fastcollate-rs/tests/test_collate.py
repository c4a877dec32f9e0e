"""collate equals default_collate: a property test over random nested batches, plus the cases it must handle."""

from __future__ import annotations

import collections
import pickle
import platform
import subprocess
import sys
import threading
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from _compare import assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, default_collate

import fastcollate
from fastcollate import _collate

Point = collections.namedtuple("Point", ["x", "y"])

TORCH_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.int8,
    torch.bool,
]
NUMPY_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.int16, np.bool_]


@st.composite
def leaf_column(draw: st.DrawFn, n: int) -> list[object]:
    """n values of one leaf kind, as a dataset would return them (same kind, dtype and shape per leaf)."""
    kind = draw(
        st.sampled_from(["tensor", "big_tensor", "ndarray", "big_ndarray", "npscalar", "int", "float", "bool", "str"])
    )
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if kind in ("tensor", "big_tensor"):
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        # "big" items take the Rust copy path (>= 16 KiB per item, >= 1 MiB per batch)
        shape = (
            (draw(st.integers(16, 24)), 1024)
            if kind == "big_tensor"
            else tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        )
        return [(torch.randn(shape, generator=gen) * 50).to(dtype) for _ in range(n)]
    if kind == "ndarray":
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        return [(rng.standard_normal(shape) * 50).astype(dtype) for _ in range(n)]
    if kind == "big_ndarray":  # the Rust path straight from numpy's memory, or a fallback when a sample differs
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        shape = (draw(st.integers(16, 24)), 1024)
        arrays = [(rng.standard_normal(shape) * 50).astype(dtype) for _ in range(n)]
        odd = draw(st.sampled_from(["none", "none", "fortran", "strided", "wider_first"]))
        if odd == "fortran":
            arrays[-1] = np.asfortranarray(arrays[-1])
        elif odd == "strided":
            arrays[-1] = np.repeat(arrays[-1], 2, axis=1)[:, ::2]
        elif odd == "wider_first":
            arrays[0] = arrays[0].astype(np.float64)
        return arrays
    if kind == "npscalar":
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        return [dtype(v) for v in rng.integers(-100, 100, n)]
    if kind == "int":
        return draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
    if kind == "float":
        return draw(st.lists(st.floats(allow_nan=False, width=64), min_size=n, max_size=n))
    if kind == "bool":
        return draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))


@st.composite
def batches(draw: st.DrawFn, depth: int = 0, n: int | None = None) -> list[object]:
    """A batch of n samples sharing one random nested structure."""
    if n is None:
        n = draw(st.integers(1, 70))
    shape = draw(st.sampled_from(["leaf", "leaf", "dict", "tuple", "list", "namedtuple"] if depth < 3 else ["leaf"]))
    if shape == "leaf":
        return draw(leaf_column(n))
    width = draw(st.integers(1, 3))
    children = [draw(batches(depth + 1, n)) for _ in range(2 if shape == "namedtuple" else width)]
    if shape == "dict":
        keys = draw(st.lists(st.text(min_size=1, max_size=4), min_size=width, max_size=width, unique=True))
        return [dict(zip(keys, values, strict=True)) for values in zip(*children, strict=True)]
    if shape == "namedtuple":
        return [Point(*values) for values in zip(*children, strict=True)]
    container = tuple if shape == "tuple" else list
    return [container(values) for values in zip(*children, strict=True)]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_collate_equals_default_collate(batch: list[object]) -> None:
    assert_same(fastcollate.collate(batch), default_collate(batch))


def test_the_issue_workloads_equal_default_collate() -> None:
    g = torch.Generator().manual_seed(0)
    images = [(torch.randn(3, 224, 224, generator=g), i) for i in range(64)]
    hwc = [np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8) for i in range(256)]
    rows = [(torch.randn(32, generator=g), i) for i in range(1024)]
    dicts = [{"x": torch.randn(128, generator=g), "y": i, "z": float(i) / 3} for i in range(256)]
    for batch in (images, hwc, rows, dicts):
        assert_same(fastcollate.collate(batch), default_collate(batch))


def test_large_batches_use_the_rust_copy_and_reuse_free_buffers_only() -> None:
    batch = [torch.full((64, 1024), float(i)) for i in range(32)]  # 256 KiB items, 8 MiB batch
    first = fastcollate.collate(batch)
    kept = first.clone()
    second = fastcollate.collate([b + 1 for b in batch])
    assert first.data_ptr() != second.data_ptr(), "a referenced batch must never be overwritten"
    assert torch.equal(first, kept)
    del second
    third = fastcollate.collate(batch)
    assert torch.equal(first, kept) and torch.equal(third, kept)
    view = third[3:5]
    del third
    fourth = fastcollate.collate([b * 2 for b in batch])
    assert torch.equal(view, kept[3:5]), "a view of an old batch keeps its memory from being reused"
    assert torch.equal(fourth, kept * 2)


class _AddressSpy:
    """Records what each ``_native.array_addresses`` call returned (None: the general path followed)."""

    def __init__(self) -> None:
        self.real = fastcollate._native.array_addresses
        self.results: list[list[int] | None] = []

    def __call__(self, *args: Any) -> list[int] | None:
        result = self.real(*args)
        self.results.append(result)
        return result


@pytest.mark.parametrize("nested", [False, True])
def test_large_numpy_arrays_are_copied_straight_from_their_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, nested: bool
) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(128)]  # 27 KiB each, 3.4 MiB
    mapped = np.memmap(tmp_path / "image.bin", dtype=np.uint8, mode="w+", shape=(96, 96, 3))  # an ndarray subclass
    mapped[:] = 7
    images[5] = mapped
    images[6].setflags(write=False)  # read-only memory is fine: it is only read
    batch: list[Any] = [(image, i) for i, image in enumerate(images)] if nested else images
    assert fastcollate._config.arrays_readable()  # its probe arrays are read once per process, before the spy
    spy = _AddressSpy()
    monkeypatch.setattr(fastcollate._native, "array_addresses", spy)
    calls: list[object] = []
    from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: calls.append(a) or from_numpy(a))
    out = fastcollate.collate(batch)
    monkeypatch.undo()
    assert spy.results == [[image.ctypes.data for image in images]]
    assert len(calls) == 1, "only sample 0 goes through torch.from_numpy (for torch's dtype)"
    with warnings.catch_warnings():  # default_collate's as_tensor warns about the read-only array; we only read it
        warnings.simplefilter("ignore", UserWarning)
        expected = default_collate(batch)
    assert_same(out, expected)


@pytest.mark.parametrize(
    "odd",
    ["fortran", "strided", "negative_stride", "other_dtype_later", "wider_first", "tensor", "shape", "byte_order"],
)
def test_numpy_batches_with_a_differing_sample_take_the_general_path(monkeypatch: pytest.MonkeyPatch, odd: str) -> None:
    rng = np.random.default_rng(1)
    batch: list[Any] = [rng.standard_normal((64, 1024)).astype(np.float32) for _ in range(32)]  # 256 KiB each
    last = batch[-1]
    batch[-1] = {
        "fortran": lambda: np.asfortranarray(last),
        "strided": lambda: np.repeat(last, 2, axis=1)[:, ::2],
        "negative_stride": lambda: last[::-1],
        "other_dtype_later": lambda: last.astype(np.float16),
        "wider_first": lambda: last,
        "tensor": lambda: torch.from_numpy(last.copy()),
        "shape": lambda: last[:, :1000].copy(),
        "byte_order": lambda: last.astype(">f4"),
    }[odd]()
    if odd == "wider_first":
        batch[0] = batch[0].astype(np.float64)
    assert fastcollate._config.arrays_readable()
    spy = _AddressSpy()
    monkeypatch.setattr(fastcollate._native, "array_addresses", spy)
    try:
        expected: Any = default_collate(batch)
    except (RuntimeError, ValueError) as err:
        expected = err
    if isinstance(expected, BaseException):
        with pytest.raises(type(expected)):
            fastcollate.collate(batch)
    else:
        assert_same(fastcollate.collate(batch), expected)
    assert spy.results == [None], "the sample that differs was noticed"


def test_numpy_array_reads_agree_with_numpy() -> None:
    read = fastcollate._native.array_addresses
    assert fastcollate._config.arrays_readable(), "the probe arrays were read as numpy reads them"
    a = np.zeros((4, 5), np.int32)
    b = np.ones((4, 5), np.int32)
    assert read([a, b], np.ndarray, [4, 5]) == [a.ctypes.data, b.ctypes.data]
    assert read([a, np.ones((4, 10), np.int32)[:, ::2]], np.ndarray, [4, 5]) is None
    assert read([a, b[::-1]], np.ndarray, [4, 5]) is None
    assert read([a, b[1:3]], np.ndarray, [4, 5]) is None
    assert read([a, b.T.copy().T], np.ndarray, [4, 5]) is None  # Fortran order
    assert read([a, b.astype(np.uint32)], np.ndarray, [4, 5]) is None
    assert read([a, b.view(b.dtype.newbyteorder())], np.ndarray, [4, 5]) is None
    assert read([a, [0] * 20], np.ndarray, [4, 5]) is None
    assert read([a, torch.zeros(4, 5, dtype=torch.int32)], np.ndarray, [4, 5]) is None
    assert read([], np.ndarray, [4, 5]) == []


def test_buffer_ring_reuses_memory_once_released() -> None:
    batch = [torch.full((64, 1024), float(i)) for i in range(32)]
    first = fastcollate.collate(batch)
    address = first.data_ptr()
    del first
    assert fastcollate.collate(batch).data_ptr() == address


def test_non_contiguous_and_grad_tensors_equal_default_collate() -> None:
    base = torch.randn(40, 300, 100)
    strided = [base[i].t() for i in range(40)]  # non-contiguous, 117 KiB each
    assert_same(fastcollate.collate(strided), default_collate(strided))
    grads = [torch.randn(3, requires_grad=True) for _ in range(4)]
    out = fastcollate.collate(grads)
    assert out.grad_fn is not None
    assert_same(out, default_collate(grads))


def test_ragged_shapes_name_the_sample_field_and_shapes() -> None:
    batch = [{"x": torch.zeros(3, 4)}, {"x": torch.zeros(3, 4)}, {"x": torch.zeros(3, 5)}]
    message = r"sample 2\['x'\] has shape \(3, 5\) but sample 0\['x'\] has \(3, 4\)"
    with pytest.raises(fastcollate.CollateShapeError, match=message):
        fastcollate.collate(batch)
    big = [torch.zeros(64, 1024)] * 20 + [torch.zeros(64, 1000)]
    with pytest.raises(ValueError, match=r"sample 20 has shape \(64, 1000\)"):
        fastcollate.collate(big)


def test_mixed_dtypes_are_an_error() -> None:
    batch = [torch.zeros(64, 1024, dtype=torch.int64)] * 20 + [torch.zeros(64, 1024)]
    message = r"sample 20 has dtype torch.float32 but sample 0 has torch.int64"
    with pytest.raises(fastcollate.CollateDtypeError, match=message):
        fastcollate.collate(batch)
    with pytest.raises(fastcollate.CollateDtypeError, match="sample 1"):
        fastcollate.collate([torch.zeros(2, dtype=torch.int32), torch.zeros(2)])


def test_nested_sparse_and_object_inputs_are_clear_errors() -> None:
    nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)], layout=torch.jagged)
    with pytest.raises(fastcollate.CollateTypeError, match="nested tensor"):
        fastcollate.collate([nested, nested])
    sparse = torch.zeros(3, 3).to_sparse()
    with pytest.raises(fastcollate.CollateTypeError, match="sparse"):
        fastcollate.collate([sparse, sparse])
    objects = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(TypeError, match="dtype object"):
        fastcollate.collate([objects, objects])


def test_structure_mismatch_names_the_sample_and_path() -> None:
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 1 at \['y'\] is missing"):
        fastcollate.collate([{"x": 1, "y": 2}, {"x": 1}])
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 2 at \[1\] has 3 elements, sample 0 has 2"):
        fastcollate.collate([(1, (2, 3)), (1, (2, 3)), (1, (2, 3, 4))])
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 1 is a int, expected a dict"):
        fastcollate.collate([{"x": 1}, 5])


@pytest.mark.parametrize(
    ("batch", "ours"),
    [
        ([{"x": 1, "y": 2}, {"x": 1}], fastcollate.CollateKeyError),
        ([(1, (2, 3)), (1, (2, 3, 4))], fastcollate.CollateLengthError),
        ([[1, 2]] * 40 + [[1, 2, 3]], fastcollate.CollateLengthError),  # the flat path
        ([{"x": 1}, 5], fastcollate.CollateContainerError),
        ([(1, 2), 5], fastcollate.CollateContainerError),
        ([torch.zeros(3), torch.zeros(4)], fastcollate.CollateShapeError),
        ([(torch.zeros(128, 128), 1)] * 20 + [(torch.zeros(128, 127), 1)], fastcollate.CollateShapeError),  # raw path
    ],
)
def test_errors_are_also_what_default_collate_raises_there(batch: list[Any], ours: type) -> None:
    """Code written around default_collate (``except KeyError``, ``except RuntimeError``...) keeps working."""
    with pytest.raises(Exception) as theirs:
        default_collate(batch)
    with pytest.raises(ours) as got:
        fastcollate.collate(batch)
    assert isinstance(got.value, type(theirs.value)), f"default_collate raised {theirs.value!r}"
    assert "sample" in str(got.value) and not str(got.value).startswith("'")  # our message, not KeyError's repr


def test_cached_flat_plans_follow_each_batchs_keys_and_leaf_types() -> None:
    # The plan of a flat dict / tuple is cached by its keys and leaf types: every change must take a new plan.
    batches = [
        [{"x": torch.ones(2), "y": 1}, {"x": torch.zeros(2), "y": 2}],
        [{"x": torch.ones(2), "y": 1.5}, {"x": torch.zeros(2), "y": 2.5}],  # same keys, y is a float now
        [{"x": "a", "y": 1}, {"x": "b", "y": 2}],  # same keys, x is a string now
        [{"y": 1, "x": torch.ones(2)}, {"y": 2, "x": torch.zeros(2)}],  # same keys, other order
        [{"x": "a", "y": True}, {"x": "b", "y": False}],
        [{1: 3, "x": 4}, {1: 5, "x": 6}],
        [{True: 3, "x": 4}, {True: 5, "x": 6}],  # True == 1: the output keeps this batch's key
        [(torch.ones(2), 1), (torch.zeros(2), 2)],
        [[torch.ones(2), 1], [torch.zeros(2), 2]],
        [(torch.ones(2), "a"), (torch.zeros(2), "b")],
        [(torch.ones(2), 1), (torch.zeros(2), 2)],
    ]
    for batch in batches:
        ours, expected = fastcollate.collate(batch), default_collate(batch)
        assert_same(ours, expected)
        if isinstance(expected, dict):
            assert [type(k) for k in ours] == [type(k) for k in expected]


def test_dicts_with_other_key_order_extra_keys_or_equal_key_objects_collate_as_default_collate() -> None:
    # Sample 0's keys are walked in order when later samples hold the very same key objects; anything else is
    # looked up, as default_collate does (extra keys of later samples are ignored there too).
    other_key = "".join(["l", "abel"])  # equal to "label", another object
    assert other_key is not "label"  # noqa: F632
    batch = [
        {"image": torch.ones(3), "label": 0},
        {"label": 1, "image": torch.zeros(3)},
        {"image": torch.full((3,), 2.0), "label": 2, "extra": "ignored"},
        {"image": torch.full((3,), 3.0), other_key: 3},
    ]
    assert_same(fastcollate.collate(batch), default_collate(batch))
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 1 at \['label'\] is missing"):
        fastcollate.collate([{"image": torch.ones(3), "label": 0}, {"image": torch.ones(3), "lab": 1}])


def test_a_later_sample_that_differs_leaves_the_flat_fast_path_and_still_equals_default_collate() -> None:
    # Flat samples are read by one loop that gives up at the first sample differing from sample 0 in any way
    # (container type, key objects, scalar types); the general walker then starts over. Every variant must still
    # equal default_collate, errors included.
    dicts = [{"x": torch.full((2,), float(i)), "y": i, "z": i / 2} for i in range(40)]
    rows = [(torch.full((2,), float(i)), i) for i in range(40)]

    def at_30(batch: list[Any], sample: Any) -> list[Any]:
        return [*batch[:30], sample, *batch[31:]]

    variants = [
        at_30(dicts, collections.OrderedDict(dicts[30])),  # a dict subclass
        at_30(dicts, {**dicts[30], "y": True}),  # a bool in the int column: default_collate's promotion
        at_30(dicts, {**dicts[30], "y": 2.5}),  # a float in the int column
        at_30(dicts, {**dicts[30], "z": 3}),  # an int in the float column
        at_30(dicts, {"z": 1.0, "y": 2, "x": torch.ones(2)}),  # other key order
        [{"a": float(i), "b": -float(i)} if i != 30 else {"b": 1.0, "a": 2.0} for i in range(40)],  # same types
        tuple(dicts),  # a tuple of samples
        at_30(rows, list(rows[30])),  # a list among tuples
        at_30(rows, Point(*rows[30])),  # a namedtuple among tuples
        [list(r) for r in rows],
    ]
    for batch in variants:
        assert_same(fastcollate.collate(batch), default_collate(batch))
    too_large = at_30(dicts, {**dicts[30], "y": 2**70})
    with pytest.raises(Exception) as theirs:
        default_collate(too_large)
    with pytest.raises(type(theirs.value), match="[Oo]verflow"):
        fastcollate.collate(too_large)
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 30 has 3 elements, sample 0 has 2"):
        fastcollate.collate(at_30(rows, (*rows[30], 0)))
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 30 is a str, expected a dict"):
        fastcollate.collate(at_30(dicts, "x"))


class _LazyDict(dict[str, Any]):
    """A mapping whose stored values are loaders: ``sample[key]`` calls them (as a lazily loading dataset does)."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return value() if callable(value) else value


def test_dict_subclasses_are_read_through_their_own_getitem_as_default_collate_reads_them() -> None:
    lazy = [_LazyDict(x=lambda i=i: torch.full((2,), float(i)), y=i) for i in range(5)]
    assert_same(fastcollate.collate(lazy), default_collate(lazy))
    mixed = [{"x": torch.zeros(2), "y": 0}, *lazy[1:]]  # sample 0 a plain dict, the others lazy
    assert_same(fastcollate.collate(mixed), default_collate(mixed))
    counts = [collections.defaultdict(int, a=1, b=2), collections.defaultdict(int, a=3)]  # b: __missing__ gives 0
    assert_same(fastcollate.collate(counts), default_collate(counts))
    assert fastcollate.collate(counts)["b"].tolist() == [2, 0]

    calls: list[str] = []

    class Failing(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            calls.append(key)
            raise RuntimeError(f"cannot load {key}")

    with pytest.raises(RuntimeError, match="cannot load y"):
        fastcollate.collate([{"y": 1}, Failing(y=2)])
    assert calls == ["y"]  # its own error is raised as it is, after one call (no second walk to name the place)
    with pytest.raises(fastcollate.CollateStructureError, match=r"sample 1 at \['y'\] is missing"):
        fastcollate.collate([{"y": 1}, collections.OrderedDict(z=2)])


def test_many_small_rows_stack_in_chunks_like_one_stack() -> None:
    # With several intra-op threads, 1,024 rows of 32 floats are stacked as chunks below torch's parallel grain.
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = [torch.randn(32, requires_grad=i == 700) for i in range(1024)]
        assert _collate._stack_in_chunks(rows) is not None
        ours = fastcollate.collate([(r, i) for i, r in enumerate(rows)])
        expected = default_collate([(r, i) for i, r in enumerate(rows)])
        assert_same(ours, expected)
        assert ours[0].requires_grad and ours[0].grad_fn is not None  # the graph to row 700 is kept
        ours[0].sum().backward()
        assert torch.equal(rows[700].grad, torch.ones(32))
        rows[900] = rows[900].double()
        with pytest.raises(fastcollate.CollateDtypeError, match="sample 900 has dtype torch.float64"):
            fastcollate.collate(rows)
        rows[900] = torch.randn(31)
        with pytest.raises(fastcollate.CollateShapeError, match=r"sample 900 has shape \(31,\)"):
            fastcollate.collate(rows)
    finally:
        torch.set_num_threads(previous)


class _StackSpy:
    """Wraps torch.stack; records the intra-op thread count it ran with, and the one a fresh thread sees meanwhile."""

    def __init__(self) -> None:
        self.real = torch.stack
        self.threads: list[int] = []
        self.other_thread: list[int] = []

    def __call__(self, tensors: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.threads.append(torch.get_num_threads())
        other = threading.Thread(target=lambda: self.other_thread.append(torch.get_num_threads()))
        other.start()
        other.join()
        return self.real(tensors, *args, **kwargs)


@pytest.fixture
def two_threads() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.skipif(sys.platform != "linux", reason="torch's Linux wheels run on OpenMP")
@pytest.mark.usefixtures("two_threads")
def test_small_rows_stack_on_one_thread_for_that_call_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # 256 rows of 128 floats: exactly torch's parallel grain, so torch.stack would use its thread pool
    assert fastcollate._config.openmp_bound()
    batch = [{"x": torch.randn(128), "y": i, "z": i / 3} for i in range(256)]
    spy = _StackSpy()
    monkeypatch.setattr(torch, "stack", spy)
    got = fastcollate.collate(batch)
    assert spy.threads == [1] and spy.other_thread == [2]  # this call on this thread only
    assert torch.get_num_threads() == 2  # set back
    monkeypatch.undo()
    assert_same(got, default_collate(batch))

    ragged = [torch.randn(128) for _ in range(256)]
    ragged[200] = torch.randn(127)
    with pytest.raises(fastcollate.CollateShapeError, match=r"sample 200 has shape \(127,\)"):
        fastcollate.collate(ragged)
    assert torch.get_num_threads() == 2  # set back after an error too

    # larger outputs keep torch's own choice (many cores can share a large copy)
    spy = _StackSpy()
    monkeypatch.setattr(torch, "stack", spy)
    big = [torch.randn(128) for _ in range(_collate.SERIAL_MAX_BYTES // 512 + 1)]
    assert torch.equal(fastcollate.collate(big), spy.real(big))
    assert spy.threads and set(spy.threads) == {2}


@pytest.mark.usefixtures("two_threads")
def test_without_openmp_small_rows_stack_in_chunks_or_as_torch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastcollate._config, "_openmp", False)  # as on a torch built without OpenMP
    spy = _StackSpy()
    monkeypatch.setattr(torch, "stack", spy)
    rows = [torch.randn(32) for _ in range(1024)]
    batch = [{"x": torch.randn(128), "y": i} for i in range(256)]
    got_rows, got_batch = fastcollate.collate(rows), fastcollate.collate(batch)
    assert len(spy.threads) == 3 and set(spy.threads) == {2}  # two chunks of rows, then one stack of x
    monkeypatch.undo()
    assert_same(got_rows, default_collate(rows))
    assert_same(got_batch, default_collate(batch))


def test_openmp_binding_errors() -> None:
    from fastcollate import _native

    assert _native.bind_openmp("/nonexistent/libtorch.so") is False  # not loaded: nothing found
    if fastcollate._config.openmp_bound():  # and an earlier binding is kept
        threads = torch.get_num_threads()
        _native.set_openmp_threads(threads + 1)
        assert torch.get_num_threads() == threads + 1
        _native.set_openmp_threads(threads)
    with pytest.raises(ValueError, match="NUL"):
        _native.bind_openmp("lib\0torch.so")
    for bad in (0, -1, 1 << 40):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            _native.set_openmp_threads(bad)
    fresh = subprocess.run(
        [sys.executable, "-c", "from fastcollate import _native; _native.set_openmp_threads(1)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fresh.returncode == 1 and "no OpenMP runtime bound: call bind_openmp first" in fresh.stderr


def test_anything_else_falls_back_to_default_collate() -> None:
    mixed = [1, 2.5, True]  # int first, then other scalars: default_collate's promotion applies
    assert_same(fastcollate.collate(mixed), default_collate(mixed))
    with pytest.raises(TypeError) as ours:
        fastcollate.collate([object(), object()])
    with pytest.raises(TypeError) as theirs:
        default_collate([object(), object()])
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(Exception) as theirs:
        default_collate([2**70, 1])
    with pytest.raises(type(theirs.value), match="[Oo]verflow"):
        fastcollate.collate([2**70, 1])


class _Samples(Dataset[dict[str, object]]):
    def __init__(self, size: int, big: bool) -> None:
        self.size, self.big = size, big

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, object]:
        g = torch.Generator().manual_seed(i)
        shape = (32, 1024) if self.big else (8,)
        return {"x": torch.randn(shape, generator=g), "label": i, "weight": i / 7, "name": f"s{i}"}


@pytest.mark.parametrize("big", [False, True])
def test_dataloader_workers_match_default_collate_and_use_shared_memory(big: bool) -> None:
    dataset = _Samples(96, big)
    ours = DataLoader(dataset, batch_size=32, num_workers=2, collate_fn=fastcollate.collate)
    theirs = DataLoader(dataset, batch_size=32, num_workers=0)
    for got, expected in zip(ours, theirs, strict=True):
        assert_same(got, expected)
        assert got["x"].is_shared(), "worker outputs travel through shared memory"
        # small outputs are packed into one segment, which the main process maps once; a feature batch larger
        # than the packing limit keeps a segment of its own, so keeping the labels does not keep it alive
        assert got["label"].untyped_storage().data_ptr() == got["weight"].untyped_storage().data_ptr()
        packed_with_labels = got["x"].untyped_storage().data_ptr() == got["label"].untyped_storage().data_ptr()
        assert packed_with_labels is (not big)
        if big:
            assert got["x"].untyped_storage().nbytes() == got["x"].nbytes


def test_worker_packing_can_be_widened_or_turned_off() -> None:
    dataset = _Samples(64, big=False)
    try:
        fastcollate.set_worker_packing(0)
        for got in DataLoader(dataset, batch_size=32, num_workers=1, collate_fn=fastcollate.collate):
            storages = {got[k].untyped_storage().data_ptr() for k in ("x", "label", "weight")}
            assert len(storages) == 3, "no packing: one storage per output, as default_collate"
        fastcollate.set_worker_packing(16)  # 32 labels (256 bytes) exceed it too
        got = next(iter(DataLoader(dataset, batch_size=32, num_workers=1, collate_fn=fastcollate.collate)))
        assert len({got[k].untyped_storage().data_ptr() for k in ("x", "label", "weight")}) == 3
    finally:
        fastcollate.set_worker_packing(64 << 10)
    assert fastcollate.get_worker_packing() == 64 << 10
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="non-negative int"):
            fastcollate.set_worker_packing(bad)  # type: ignore[arg-type]


class _Sequences(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.arange(1 + i % 7)


def test_padded_batches_from_workers_share_one_segment_and_equal_the_main_process() -> None:
    ours = DataLoader(_Sequences(), batch_size=8, num_workers=2, collate_fn=fastcollate.pad_collate)
    theirs = DataLoader(_Sequences(), batch_size=8, num_workers=0, collate_fn=fastcollate.pad_collate)
    for got, expected in zip(ours, theirs, strict=True):
        assert isinstance(got, fastcollate.PaddedBatch)
        assert_same(tuple(got), tuple(expected))
        assert len({t.untyped_storage().data_ptr() for t in got}) == 1


def test_pack_shared_moves_small_tensors_into_one_segment_and_leaves_the_rest() -> None:
    from fastcollate import _buffers

    grad = torch.ones(3, requires_grad=True)
    big = torch.zeros(_buffers.get_worker_packing() // 4 + 1)
    padded = fastcollate.PaddedBatch(
        torch.arange(6).view(2, 3), torch.tensor([3, 2]), torch.ones(2, 3, dtype=torch.bool)
    )
    values = [torch.arange(5.0), ["a", "b"], grad, big, padded, torch.tensor([True, False]), torch.empty(0)]
    packed = _buffers.pack_shared(values)
    for got, expected in zip(packed, values, strict=True):
        assert_same(got, expected)
    assert packed[1] is values[1] and packed[2] is grad and packed[3] is big  # strings, grad and large: untouched
    assert isinstance(packed[4], fastcollate.PaddedBatch)
    moved = [packed[0], *packed[4], packed[5], packed[6]]
    assert all(t.is_shared() for t in moved)
    assert len({t.untyped_storage().data_ptr() for t in moved}) == 1
    assert all(t.data_ptr() % 64 == 0 for t in moved)
    alone = [torch.arange(3), "x"]
    assert _buffers.pack_shared(alone) is alone  # one small tensor: the DataLoader shares it anyway


def test_prefault_keeps_contents_and_reports_what_it_did() -> None:
    from fastcollate import _native

    t = torch.arange(3 << 20, dtype=torch.uint8)
    before = t.clone()
    release = tuple(int(part) for part in platform.release().split(".")[:2] if part.isdigit())
    supported = sys.platform == "linux" and release >= (5, 14)  # MADV_POPULATE_WRITE came with Linux 5.14
    assert _native.prefault((t.data_ptr() + 1, t.nbytes - 1)) is supported
    assert torch.equal(t, before)
    assert _native.prefault((4096, 4096)) is False  # nothing mapped there: madvise fails, nothing happens
    with pytest.raises(fastcollate.CollateShapeError, match="null address"):
        _native.prefault((0, 16))


def test_collate_is_picklable_for_spawned_workers() -> None:
    assert pickle.loads(pickle.dumps(fastcollate.collate)) is fastcollate.collate


def test_small_and_large_thresholds_are_consistent() -> None:
    assert _collate.RAW_MIN_ITEM_BYTES <= _collate.RAW_MIN_BATCH_BYTES
