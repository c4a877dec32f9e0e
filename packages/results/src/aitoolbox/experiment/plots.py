"""PNG plots of the training history and of confusion matrices (matplotlib, imported only here)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aitoolbox.experiment._atomic import write_bytes_atomic

__all__ = ["plot_confusion_matrix", "plot_history"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def _numeric(values: Sequence[Any]) -> list[float] | None:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        out.append(float(v))
    return out


def plot_history(
    history: Mapping[str, Sequence[Any]], directory: Path, *, epochs: Mapping[str, Sequence[int]] | None = None
) -> list[Path]:
    """``loss.png`` (training and validation loss) and one PNG per other numeric metric, over epochs. A metric with a
    single value (``train_end_*``, a one-epoch run) is not drawn: a plot of one point says nothing the results and the
    summary do not.

    ``epochs``: metric -> the 0-based epoch of each value (a metric recorded every N epochs is drawn at those
    epochs); without it, a metric's i-th value is at epoch i + 1.
    """
    plt = _pyplot()
    written = []
    series = {k: v for k, v in history.items() if (n := _numeric(v)) is not None and len(n) > 1}
    x = {k: _epochs_of(k, v, epochs) for k, v in series.items()}
    losses = {k: v for k, v in series.items() if k in ("loss", "val_loss")}
    if losses:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, values in losses.items():
            ax.plot(x[name], values, marker="o", label=name)
        ax.set(xlabel="epoch", ylabel="loss", title="loss")
        ax.legend()
        written.append(_save(fig, directory / "loss.png"))
    for name, values in series.items():
        if name in losses:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x[name], [v if math.isfinite(v) else float("nan") for v in values], marker="o")
        ax.set(xlabel="epoch", ylabel=name, title=name)
        written.append(_save(fig, directory / f"{_safe(name)}.png"))
    return written


def _epochs_of(name: str, values: Sequence[Any], epochs: Mapping[str, Sequence[int]] | None) -> list[int]:
    given = (epochs or {}).get(name)
    if given is not None and len(given) == len(values):
        return [int(e) + 1 for e in given]
    return list(range(1, len(values) + 1))


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], path: Path, title: str = "confusion matrix") -> Path:
    """A labelled heat map of a confusion matrix (rows: true class, columns: predicted)."""
    plt = _pyplot()
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "white" if top and value > top / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=color)
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(n), yticks=range(n))
    return _save(fig, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
