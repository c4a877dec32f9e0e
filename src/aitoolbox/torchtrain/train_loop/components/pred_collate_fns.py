"""The original AIToolbox's prediction collate functions (``TrainLoop(collate_batch_pred_fn=...,
pred_transform_fn=...)``): how each batch's predictions are accumulated, then turned into the result."""

from __future__ import annotations

from typing import Any

__all__ = ["append_concat_predictions", "append_predictions", "keep_list_transf", "torch_cat_transf"]


def append_predictions(y_batch: Any, predictions: list[Any]) -> list[Any]:
    """Append the batch's predictions (one item per batch) and return the list.

    >>> append_predictions([1, 2], [[0]])
    [[0], [1, 2]]
    """
    predictions.append(y_batch)
    return predictions


def append_concat_predictions(y_batch: Any, predictions: list[Any]) -> list[Any]:
    """Extend by a list of per-sample predictions, or append one tensor, and return the list.

    >>> append_concat_predictions([1, 2], [0])
    [0, 1, 2]
    """
    if isinstance(y_batch, list):
        predictions += y_batch
    else:
        predictions.append(y_batch)
    return predictions


def torch_cat_transf(predictions: list[Any]) -> Any:
    """The batches' tensors concatenated along dim 0."""
    import torch

    return torch.cat(predictions)


def keep_list_transf(predictions: list[Any]) -> list[Any]:
    """The predictions as they are (a list)."""
    return predictions
