"""Log-cosh regression loss: quadratic for small errors, linear for large ones."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from framework.loss import Loss

from framework import ShapeError

__all__ = ["LogCosh"]

_LOG2 = math.log(2.0)


class LogCosh(Loss):
    """``L = 1/N sum_i w_i mean_j log(cosh(y_pred_ij - y_true_ij))``.

    Behaves like ``d^2 / 2`` for small errors ``d`` and like ``|d| - log 2`` for
    large ones, so it is smooth like MSE and robust like MAE. ``log(cosh(d))``
    is computed as ``|d| + log1p(exp(-2|d|)) - log 2``, which never overflows.

    Shape:
        - y_pred: ``(N, *)``; y_true: the same shape.
        - sample_weight: optional ``(N,)``, Keras semantics (see ``Loss``).

    Gradient:
        ``d log cosh(d) / dd = tanh(d)``, so
        ``dL/dy_pred_ij = w_i tanh(d_ij) / (N M)`` with ``M`` the number of
        entries per sample (the batch mean's ``1/N`` included).
    """

    def forward(self, y_pred: Any, y_true: Any, sample_weight: Any = None) -> float:
        y_pred = self._check_pred(y_pred)
        y_true = np.asarray(y_true, dtype=y_pred.dtype)
        if y_true.shape != y_pred.shape:
            raise ShapeError(
                f"LogCosh: y_true has shape {y_true.shape}, y_pred {y_pred.shape}; they must match"
            )
        d = y_pred - y_true
        a = np.abs(d)
        per_entry = a + np.log1p(np.exp(-2.0 * a)) - _LOG2
        n = y_pred.shape[0]
        per_sample = per_entry.reshape(n, -1).mean(axis=1)
        weight = self._sample_weight(sample_weight, n, y_pred.dtype)
        self._d, self._weight = d, weight
        if weight is not None:
            per_sample = per_sample * weight
        return float(per_sample.sum() / n)

    def backward(self) -> np.ndarray:
        d = self._d
        grad = np.tanh(d) / d.size
        if self._weight is not None:
            grad *= self._weight.reshape((-1,) + (1,) * (d.ndim - 1))
        return grad
