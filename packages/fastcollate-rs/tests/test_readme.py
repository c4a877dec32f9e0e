"""The README's Python example runs as written."""

from __future__ import annotations

import pathlib
import re
import warnings

import torch


def test_readme_example_runs() -> None:
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    x, y = namespace["x"], namespace["y"]
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,)
    padded = namespace["padded"]
    assert padded.data.shape == (3, 7) and padded.lengths.tolist() == [5, 2, 7]
    xb, yb = next(iter(namespace["loader"]))
    assert xb.shape == (64, 3, 32, 32) and yb.dtype == torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory=True without CUDA
        batches = list(namespace["fed"])
    assert [tuple(x.shape) for x, _ in batches] == [(64, 3, 32, 32)] * 4
