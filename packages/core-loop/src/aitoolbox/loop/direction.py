"""Which direction of a metric is better: the one rule shared by early stopping and checkpoint ranking."""

from __future__ import annotations

import re

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["MINIMISED_HINTS", "resolve_mode"]

#: a metric whose name holds one of these words (``val_loss``, ``mean_squared_error``, ``val_mse``, ``test_wer``...)
#: is minimised; every other metric (``val_accuracy``, ``val_bleu``, ``val_iou``, ``val_map``, ``r2``...) is maximised.
MINIMISED_HINTS = (
    "loss",
    "error",
    "err",
    "mse",
    "mae",
    "rmse",
    "msle",
    "mape",
    "perplexity",
    "ppl",
    "nll",
    "wer",
    "cer",
    "distance",
    "regret",
)

_SUBSTRINGS = ("loss", "error", "perplexity")  # also inside longer words: "crossentropyloss", "mean_squared_error"


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """``'min'`` or ``'max'`` for ``monitor``: ``mode`` itself unless it is ``'auto'``, then the name decides.

    Args:
        monitor: a training-history metric name.
        mode: ``'min'``, ``'max'`` or ``'auto'``.

    Raises:
        LoopConfigError: ``mode`` is none of the three.

    Example:
        >>> [resolve_mode(m) for m in ("val_loss", "val_mse", "val_accuracy", "val_bleu", "val_iou")]
        ['min', 'min', 'max', 'max', 'max']
        >>> resolve_mode("val_bleu", "min")
        'min'

    .. versionadded:: 0.2
    """
    if mode not in ("min", "max", "auto"):
        raise LoopConfigError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    if words & set(MINIMISED_HINTS) or any(hint in name for hint in _SUBSTRINGS):
        return "min"
    return "max"
