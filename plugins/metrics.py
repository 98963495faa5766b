"""Built-in plugin: accuracy, top-k accuracy, mean absolute and mean squared error.

Each metric's ``compute(y_pred, y_true)`` is the batch mean of a per-sample
value; the :class:`~framework.base.metric.Metric` base keeps the running mean over
an epoch (``update`` weights each batch by its size, so batches of different
sizes average correctly). Classification metrics take the model's raw outputs
(logits or probabilities: the arg-max is the same).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.metric import Metric
from framework.base.validation import match_target_shape
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.hookspecs import hookimpl

__all__ = ["Accuracy", "TopKAccuracy", "MeanAbsoluteError", "MeanSquaredError"]


def _class_targets(metric: Metric, y_pred: np.ndarray, y_true: Any) -> np.ndarray:
    """Integer class ids of shape ``(N, d...)`` from labels or one-hot / probabilities."""
    y_true = np.asarray(y_true)
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


class Accuracy(Metric):
    """Fraction of correct predictions.

    Categorical case, ``y_pred`` of shape ``(N, C)`` or ``(N, C, d...)`` with
    ``C > 1``: the prediction is ``argmax`` over axis 1, compared with integer
    labels or with the ``argmax`` of one-hot targets. Binary case, ``y_pred``
    of shape ``(N,)`` or ``(N, 1)``: the prediction is ``y_pred > threshold``,
    compared with ``y_true > 0.5``. The default threshold 0.5 suits
    probabilities; for logits (a model trained with
    ``BinaryCrossEntropy``) pass ``threshold=0.0``, the same decision.

    Args:
        threshold: decision threshold of the binary case, default 0.5.
        name: the history key, default ``"accuracy"``.

    Example:
        >>> import numpy as np
        >>> Accuracy()(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
        0.5
    """

    def __init__(self, threshold: float = 0.5, name: str | None = None) -> None:
        super().__init__(name=name)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
        ):
            raise ConfigError(f"Accuracy: threshold must be a finite number, got {threshold!r}")
        self.threshold = float(threshold)

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        y_pred = np.asarray(y_pred)
        if y_pred.ndim == 0:
            raise ShapeError(f"Accuracy: y_pred must have a batch axis, got shape {y_pred.shape}")
        if y_pred.ndim == 1 or (y_pred.ndim == 2 and y_pred.shape[1] == 1):
            n = y_pred.shape[0]
            y_true = np.asarray(y_true)
            if y_true.shape not in ((n,), (n, 1)):
                raise ShapeError(
                    f"Accuracy: binary y_pred of shape {y_pred.shape} needs y_true of shape ({n},) or "
                    f"({n}, 1), got {y_true.shape}"
                )
            correct = (y_pred.reshape(n) > self.threshold) == (y_true.reshape(n) > 0.5)
        else:
            correct = np.argmax(y_pred, axis=1) == _class_targets(self, y_pred, y_true)
        return float(correct.mean()) if correct.size else float("nan")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.threshold != 0.5:
            config["threshold"] = self.threshold
        return config


class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` highest scores.

    A sample counts as correct when fewer than ``k`` classes score strictly
    higher than its true class (ties are resolved in its favour).

    Args:
        k: how many top classes count, ``>= 1``, default 5.
        name: the history key, default ``"top_k_accuracy"``.

    Shape:
        - y_pred: ``(N, C)`` or ``(N, C, d...)`` scores; y_true: integer labels
          ``(N, d...)`` or one-hot of y_pred's shape.
    """

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        super().__init__(name=name)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"TopKAccuracy: k must be a positive integer, got {k!r}")
        self.k = int(k)

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        y_pred = np.asarray(y_pred)
        if y_pred.ndim < 2:
            raise ShapeError(f"TopKAccuracy: y_pred must be scores of shape (N, C), got {y_pred.shape}")
        labels = _class_targets(self, y_pred, y_true)
        true_score = np.take_along_axis(y_pred, np.expand_dims(labels, 1), axis=1)
        higher = np.count_nonzero(y_pred > true_score, axis=1)
        correct = higher < self.k
        return float(correct.mean()) if correct.size else float("nan")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


class _RegressionMetric(Metric):
    def _residual(self, y_pred: Any, y_true: Any) -> np.ndarray:
        y_pred = np.asarray(y_pred, dtype=np.float64)
        y_true = np.asarray(y_true, dtype=np.float64)
        if y_pred.ndim == 0:
            raise ShapeError(f"{type(self).__name__}: y_pred must have a batch axis, got a scalar")
        return y_pred - match_target_shape(type(self).__name__, y_pred, y_true)


class MeanAbsoluteError(_RegressionMetric):
    """Mean absolute error ``mean(|y_pred - y_true|)`` over every element.

    Args:
        name: the history key, default ``"mae"``.
    """

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        return float(np.abs(self._residual(y_pred, y_true)).mean())


class MeanSquaredError(_RegressionMetric):
    """Mean squared error ``mean((y_pred - y_true)^2)`` over every element.

    Args:
        name: the history key, default ``"mse"``.
    """

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        return float(np.square(self._residual(y_pred, y_true)).mean())


@hookimpl
def register_metrics(register: Any) -> None:
    register(Accuracy, name="accuracy", aliases=("acc", "Accuracy"))
    register(TopKAccuracy, name="top_k_accuracy", aliases=("top_k_categorical_accuracy", "TopKAccuracy"))
    register(MeanAbsoluteError, name="mae", aliases=("mean_absolute_error", "MeanAbsoluteError", "MAE"))
    register(MeanSquaredError, name="mse", aliases=("mean_squared_error", "MeanSquaredError", "MSE"))
