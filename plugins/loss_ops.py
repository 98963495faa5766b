"""Shared helpers of the built-in losses: target matching, row broadcasting, the clip epsilon, smoothing."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.loss import Loss
from framework.base.validation import match_target_shape
from framework.errors import ConfigError

__all__ = ["EPSILON", "broadcast_rows", "check_smoothing", "match_target"]

#: Keras's fuzz factor: probabilities are clipped into ``[EPSILON, 1 - EPSILON]`` before the log.
EPSILON = 1e-7


def broadcast_rows(weight: np.ndarray, ndim: int) -> np.ndarray:
    """An ``(N,)`` array reshaped to ``(N, 1, ..., 1)`` with ``ndim`` axes."""
    return weight.reshape((-1,) + (1,) * (ndim - 1))


def match_target(loss: Loss, y_pred: np.ndarray, y_true: Any) -> np.ndarray:
    """``y_true`` cast to ``y_pred``'s dtype and shape; ``(N,)`` against ``(N, 1)`` is accepted."""
    return match_target_shape(type(loss).__name__, y_pred, y_true).astype(y_pred.dtype, copy=False)


def check_smoothing(owner: str, value: Any) -> float:
    """``label_smoothing`` as a float in ``[0, 1]``, else a ConfigError naming ``owner`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}: label_smoothing must be in [0, 1], got {value!r}")
    return float(value)
