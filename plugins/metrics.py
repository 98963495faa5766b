"""Built-in plugin: accuracy, top-k accuracy, mean errors, and the stateful epoch metrics.

The entry-point module of the ``metrics`` plugin. Here: the mean metrics,
whose ``values(y_pred, y_true)`` is a value per sample; the
:class:`~framework.base.metric.Metric` base keeps their (sample-weighted)
running mean over an epoch, so batches of different sizes average correctly.
It also registers the metrics of :mod:`plugins.classification_metrics`
(``precision``, ``recall``, ``f1_score``, ``confusion_matrix``) and
:mod:`plugins.auc` (``auc``), which keep counts over the epoch.

Classification metrics take the model's raw outputs and learn from ``compile``
(``bind_output``) whether those are logits or probabilities: a binary score is
thresholded at 0 on logits and 0.5 on probabilities; several classes take the
arg-max.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.loss import widen
from framework.base.metric import Metric
from framework.base.validation import match_target_shape, numeric_array
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from plugins.auc import AUC
from plugins.classification_metrics import ConfusionMatrix, F1Score, Precision, Recall
from plugins.metric_ops import binary_targets, binary_threshold, class_targets, is_binary_output

__all__ = [
    "Accuracy",
    "TopKAccuracy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Precision",
    "Recall",
    "F1Score",
    "AUC",
    "ConfusionMatrix",
]


class Accuracy(Metric):
    """Fraction of correct predictions, on logits or probabilities alike.

    What the model outputs decides the rule, so ``metrics=["accuracy"]`` is
    right whichever loss spelling was compiled (``compile`` calls
    :meth:`~framework.base.metric.Metric.bind_output` with the loss's
    ``expects`` / ``link``):

    - binary, ``y_pred`` of shape ``(N,)`` or ``(N, 1)``, or any shape when the
      loss's link is a sigmoid (multi-label, element by element): the
      prediction is ``y_pred > threshold``, compared with ``y_true > 0.5``.
      The threshold defaults to 0 on logits and 0.5 on probabilities (the
      same decision, ``sigmoid(z) > 0.5``);
    - categorical, ``y_pred`` of shape ``(N, C)`` or ``(N, C, d...)`` with
      ``C > 1``: ``argmax`` over axis 1 (the same for logits and
      probabilities), compared with integer labels or the ``argmax`` of
      one-hot targets.

    Args:
        threshold: decision threshold of the binary case in ``y_pred``'s
            units, default ``None`` (0 on logits, 0.5 on probabilities or when
            unbound).
        name: the history key, default ``"accuracy"``.

    Example:
        >>> import numpy as np
        >>> Accuracy()(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
        0.5
    """

    def __init__(self, threshold: float | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
        ):
            raise ConfigError(f"Accuracy: threshold must be a finite number or None, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)

    def values(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        """1.0 where the prediction is right, per sample (and position / label)."""
        # float16 scores meet the threshold as float32 ones do
        y_pred = widen(numeric_array("Accuracy", "y_pred", y_pred))
        if y_pred.ndim == 0:
            raise ShapeError(f"Accuracy: y_pred must have a batch axis, got shape {y_pred.shape}")
        if is_binary_output(self, y_pred):
            n = y_pred.shape[0]
            y_true = numeric_array("Accuracy", "y_true", y_true)
            if y_pred.ndim <= 2 and y_pred.size == n:
                if y_true.shape not in ((n,), (n, 1)):
                    raise ShapeError(
                        f"Accuracy: binary y_pred of shape {y_pred.shape} needs y_true of shape ({n},) or "
                        f"({n}, 1), got {y_true.shape}"
                    )
                y_pred, y_true = y_pred.reshape(n), y_true.reshape(n)
            else:
                y_true = match_target_shape("Accuracy", y_pred, y_true)
            correct = (y_pred > binary_threshold(self, self.threshold)) == binary_targets(self, y_true)
        else:
            correct = np.argmax(y_pred, axis=1) == class_targets(self, y_pred, y_true)
        return correct.astype(np.float64)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.threshold is not None:
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

    def values(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        y_pred = numeric_array("TopKAccuracy", "y_pred", y_pred)
        if y_pred.ndim < 2:
            raise ShapeError(f"TopKAccuracy: y_pred must be scores of shape (N, C), got {y_pred.shape}")
        labels = class_targets(self, y_pred, y_true)
        true_score = np.take_along_axis(y_pred, np.expand_dims(labels, 1), axis=1)
        higher = np.count_nonzero(y_pred > true_score, axis=1)
        return (higher < self.k).astype(np.float64)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


class _RegressionMetric(Metric):
    def _residual(self, y_pred: Any, y_true: Any) -> np.ndarray:
        owner = type(self).__name__
        y_pred = np.asarray(numeric_array(owner, "y_pred", y_pred), dtype=np.float64)
        y_true = np.asarray(numeric_array(owner, "y_true", y_true), dtype=np.float64)
        if y_pred.ndim == 0:
            raise ShapeError(f"{type(self).__name__}: y_pred must have a batch axis, got a scalar")
        return y_pred - match_target_shape(type(self).__name__, y_pred, y_true)


class MeanAbsoluteError(_RegressionMetric):
    """Mean absolute error ``mean(|y_pred - y_true|)`` over every element.

    Args:
        name: the history key, default ``"mae"``.
    """

    def values(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        return np.abs(self._residual(y_pred, y_true))


class MeanSquaredError(_RegressionMetric):
    """Mean squared error ``mean((y_pred - y_true)^2)`` over every element.

    Args:
        name: the history key, default ``"mse"``.
    """

    def values(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        return np.square(self._residual(y_pred, y_true))


@hookimpl
def register_metrics(register: Any) -> None:
    register(Accuracy, name="accuracy", aliases=("acc", "Accuracy"))
    register(TopKAccuracy, name="top_k_accuracy", aliases=("top_k_categorical_accuracy", "TopKAccuracy"))
    register(MeanAbsoluteError, name="mae", aliases=("mean_absolute_error", "MeanAbsoluteError", "MAE"))
    register(MeanSquaredError, name="mse", aliases=("mean_squared_error", "MeanSquaredError", "MSE"))
    register(Precision, name="precision", aliases=("Precision",))
    register(Recall, name="recall", aliases=("Recall",))
    register(F1Score, name="f1_score", aliases=("F1Score", "f1"))
    register(AUC, name="auc", aliases=("AUC",))
    register(ConfusionMatrix, name="confusion_matrix", aliases=("ConfusionMatrix",))
