"""Turning predictions (tensors, arrays, lists) into checked NumPy arrays without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from aitoolbox.experiment.errors import ResultPackageError


def from_tensor(x: Any) -> Any:
    """A torch tensor (any device, with or without grad) as a NumPy array, detected without importing torch;
    anything else unchanged."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return x


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a tensor (any device, with or without grad), array or sequence to a NumPy array."""
    if x is None:
        raise ResultPackageError(f"{name} is None; the model's get_predictions must return it")
    x = from_tensor(x)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ResultPackageError(f"{name} cannot be read as an array: {err}") from err
    if arr.dtype == object:
        raise ResultPackageError(f"{name} holds Python objects (ragged or mixed values); give numbers of one shape")
    return arr


def check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of targets and predictions with the same number of rows, non-empty and free of NaN."""
    t, p = to_numpy(y_true, "y_true"), to_numpy(y_pred, "y_pred")
    if t.ndim == 0 or p.ndim == 0:
        raise ResultPackageError(f"y_true and y_pred must have one row per example, got shapes {t.shape} and {p.shape}")
    if len(t) == 0 or len(p) == 0:
        raise ResultPackageError("there are no predictions to evaluate (empty y_true or y_pred); is the loader empty?")
    if len(t) != len(p):
        raise ResultPackageError(f"y_true has {len(t)} rows but y_pred has {len(p)}; they must be the same examples")
    for name, arr in (("y_pred", p), ("y_true", t)):
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            rows = np.unique(np.nonzero(np.isnan(arr))[0])[:5].tolist()
            raise ResultPackageError(f"{name} contains NaN (rows {rows}...); the model diverged or the data has gaps")
    return t, p


def class_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Class indices from indices (n,), one-hot/probabilities/logits (n, k) or (n, 1)."""
    if arr.ndim == 1:
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.mod(arr, 1) == 0):
                raise ResultPackageError(
                    f"{name} is 1-D with fractional values; give class indices, or (n, classes) scores to argmax"
                )
            return arr.astype(np.int64)
        return arr
    if arr.ndim == 2:
        return arr[:, 0] if arr.shape[1] == 1 else arr.argmax(axis=1)
    raise ResultPackageError(f"{name} must be (n,) class indices or (n, classes) scores, got shape {arr.shape}")


def plain(value: Any) -> Any:
    """JSON-ready copy: NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
