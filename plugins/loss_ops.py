"""Shared helpers of the built-in losses: target matching, row broadcasting, the clip epsilon."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.loss import Loss
from framework.base.validation import match_target_shape

__all__ = ["EPSILON", "broadcast_rows", "match_target"]

#: Keras's fuzz factor: probabilities are clipped into ``[EPSILON, 1 - EPSILON]`` before the log.
EPSILON = 1e-7


def broadcast_rows(weight: np.ndarray, ndim: int) -> np.ndarray:
    """An ``(N,)`` array reshaped to ``(N, 1, ..., 1)`` with ``ndim`` axes."""
    return weight.reshape((-1,) + (1,) * (ndim - 1))


def match_target(loss: Loss, y_pred: np.ndarray, y_true: Any) -> np.ndarray:
    """``y_true`` cast to ``y_pred``'s dtype and shape; ``(N,)`` against ``(N, 1)`` is accepted."""
    return match_target_shape(type(loss).__name__, y_pred, y_true).astype(y_pred.dtype, copy=False)
