"""Shared helpers of the classification metrics: targets, thresholds and what the model outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.loss import widen
from framework.base.metric import Metric
from framework.base.validation import numeric_array
from framework.errors import DataError, ShapeError

__all__ = ["binary_targets", "binary_threshold", "class_targets", "is_binary_output"]


def class_targets(metric: Metric, y_pred: np.ndarray, y_true: Any) -> np.ndarray:
    """Integer class ids of shape ``(N, d...)`` from labels or one-hot / probabilities."""
    y_true = numeric_array(type(metric).__name__, "y_true", y_true)
    n, classes = y_pred.shape[:2]
    label_shape = (n, *y_pred.shape[2:])
    if y_true.shape == y_pred.shape:
        return np.argmax(y_true, axis=1)
    if y_pred.ndim == 2 and y_true.shape == (n, 1):
        y_true = y_true[:, 0]
    if y_true.shape != label_shape:
        raise ShapeError(
            f"{type(metric).__name__}: y_true must be integer labels of shape {label_shape} or one-hot "
            f"of y_pred's shape {y_pred.shape}, got {y_true.shape}"
        )
    labels = y_true.astype(np.int64)
    bad = (labels < 0) | (labels >= classes) | (labels != y_true)
    if np.any(bad):
        value = y_true[bad].flat[0].item()
        raise DataError(
            f"{type(metric).__name__}: label {value} is not an integer in [0, {classes}) "
            f"for y_pred with C={classes} classes"
        )
    return labels


def binary_targets(metric: Metric, y_true: Any) -> np.ndarray:
    """``y_true > 0.5`` for binary targets in ``[0, 1]`` (labels 0 / 1, or soft labels).

    A metric that ``compile`` bound to an output of a regression loss (``expects`` None: a flat
    ``metrics`` list applies to every output, as in Keras 2) thresholds real targets unchecked.

    Raises:
        DataError: naming the metric and the value, for targets that are not numbers or lie
            outside ``[0, 1]`` (a class label 2 would count as positive without a word), or NaN.
    """
    owner = type(metric).__name__
    y_true = numeric_array(owner, "y_true", y_true)
    regression = getattr(metric, "output_bound", False) and metric.output_expects is None
    if regression or not y_true.size or y_true.dtype.kind == "b":
        return y_true > 0.5
    if not (y_true.min() >= 0 and y_true.max() <= 1):
        value = y_true[~((y_true >= 0) & (y_true <= 1))].flat[0].item()
        raise DataError(
            f"{owner}: binary targets must be in [0, 1] (labels 0 / 1 or probabilities), got {value}; "
            "class labels 0..C-1 need y_pred of one score per class, shape (N, C)"
        )
    return y_true > 0.5


def binary_threshold(metric: Metric, threshold: float | None) -> float:
    """The decision threshold in ``y_pred``'s units: the given one, else 0 on logits and 0.5 otherwise."""
    if threshold is not None:
        return threshold
    return 0.0 if metric.output_expects == "logits" else 0.5


def is_binary_output(metric: Metric, y_pred: np.ndarray) -> bool:
    """Whether ``y_pred`` holds independent binary scores: one column, or a bound sigmoid (multi-label)."""
    return y_pred.ndim == 1 or (y_pred.ndim == 2 and y_pred.shape[1] == 1) or metric.output_link == "sigmoid"


def binary_decision_shape(y_pred: np.ndarray) -> bool:
    """Whether ``y_pred`` has one score per sample: ``(N,)`` or ``(N, 1)``."""
    return y_pred.ndim == 1 or (y_pred.ndim == 2 and y_pred.shape[1] == 1)


def decisions(
    metric: Metric, y_pred: Any, y_true: Any, threshold: float | None, weight: np.ndarray
) -> tuple[str, np.ndarray, np.ndarray, int, np.ndarray]:
    """Predicted and true classes of a batch, by what the model outputs.

    Returns ``(mode, pred, true, classes, weight)``:

    - ``"multiclass"``: ``pred`` / ``true`` integer labels ``(M,)`` (one per
      sample and position), ``classes`` ``C`` (2 for one binary score per
      sample, thresholded by :func:`binary_threshold`), ``weight`` ``(M,)``;
    - ``"multilabel"`` (a bound sigmoid over ``K > 1`` columns): ``pred`` /
      ``true`` booleans ``(N, K)``, ``classes`` ``K``, ``weight`` ``(N,)``.
    """
    # a float16 score is compared with the threshold exactly
    y_pred = widen(numeric_array(type(metric).__name__, "y_pred", y_pred))
    if y_pred.ndim == 0:
        raise ShapeError(f"{type(metric).__name__}: y_pred must have a batch axis, got a scalar")
    n = y_pred.shape[0]
    cut = binary_threshold(metric, threshold)
    if binary_decision_shape(y_pred):
        y_true = numeric_array(type(metric).__name__, "y_true", y_true)
        if y_true.shape not in ((n,), (n, 1)):
            raise ShapeError(
                f"{type(metric).__name__}: binary y_pred of shape {y_pred.shape} needs y_true of shape "
                f"({n},) or ({n}, 1), got {y_true.shape}"
            )
        pred = (y_pred.reshape(n) > cut).astype(np.int64)
        return "multiclass", pred, binary_targets(metric, y_true.reshape(n)).astype(np.int64), 2, weight
    if metric.output_link == "sigmoid":
        from framework.base.validation import match_target_shape

        if y_pred.ndim != 2:
            raise ShapeError(
                f"{type(metric).__name__}: multi-label y_pred must have shape (N, K), got {y_pred.shape}"
            )
        y_true = match_target_shape(type(metric).__name__, y_pred, y_true)
        return "multilabel", y_pred > cut, binary_targets(metric, y_true), y_pred.shape[1], weight
    labels = class_targets(metric, y_pred, y_true)
    pred = np.argmax(y_pred, axis=1)
    positions = pred[0].size if n else 1
    return "multiclass", pred.reshape(-1), labels.reshape(-1), y_pred.shape[1], np.repeat(weight, positions)
