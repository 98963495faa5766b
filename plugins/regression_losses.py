"""Regression losses: mean squared error, mean absolute error and Huber, element by element.

``forward`` returns the batch mean as a Python float and ``backward`` returns
``dL/d y_pred`` with the mean's ``1/size`` in it. Sample weights (shape
``(N,)``) follow Keras: the mean of ``w_i * l_ij``, not renormalised.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.loss import Loss
from framework.errors import ConfigError, NotBuiltError
from plugins.loss_ops import broadcast_rows, match_target

__all__ = ["MSE", "MAE", "Huber"]


class _PointwiseLoss(Loss):
    """A loss ``mean(f(y_pred - y_true))`` over every element; subclasses give ``f`` and ``f'``."""

    def __init__(self) -> None:
        self._cache: tuple[np.ndarray, np.ndarray | None] | None = None

    def _value(self, r: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _derivative(self, r: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        y_pred = self._check_pred(y_pred)
        residual = y_pred - match_target(self, y_pred, y_true)
        weight = self._sample_weight(sample_weight, y_pred.shape[0], y_pred.dtype)
        values = self._value(residual)
        if weight is not None:
            values *= broadcast_rows(weight, values.ndim)
        self._cache = (residual, weight)
        return float(values.mean(dtype=np.float64))

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise NotBuiltError(f"{type(self).__name__}: call forward() before backward()")
        residual, weight = self._cache
        grad = self._derivative(residual)
        grad *= 1.0 / residual.size
        if weight is not None:
            grad *= broadcast_rows(weight, grad.ndim)
        return grad


class MSE(_PointwiseLoss):
    """Mean squared error: ``L = mean((y_pred - y_true)^2)`` over every element.

    Shape:
        - y_pred: ``(N, *)``; y_true: the same (``(N,)`` against ``(N, 1)`` is
          accepted).

    Gradient:
        ``dL/dy_pred = 2 (y_pred - y_true) / size``, ``size`` the number of
        elements (``N * prod(*)``).

    Example:
        >>> import numpy as np
        >>> MSE()(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))
        2.5
    """

    def _value(self, r: np.ndarray) -> np.ndarray:
        return np.square(r)

    def _derivative(self, r: np.ndarray) -> np.ndarray:
        return np.multiply(r, 2.0)


class MAE(_PointwiseLoss):
    """Mean absolute error: ``L = mean(|y_pred - y_true|)`` over every element.

    Shape:
        - y_pred: ``(N, *)``; y_true: the same.

    Gradient:
        ``dL/dy_pred = sign(y_pred - y_true) / size`` (0 where they are equal,
        a subgradient).
    """

    def _value(self, r: np.ndarray) -> np.ndarray:
        return np.abs(r)

    def _derivative(self, r: np.ndarray) -> np.ndarray:
        return np.sign(r)


class Huber(_PointwiseLoss):
    """Huber loss: quadratic near zero, linear beyond ``delta`` (PyTorch's ``HuberLoss``).

    ``l(r) = r^2 / 2`` if ``|r| <= delta`` else ``delta * (|r| - delta / 2)``,
    with ``r = y_pred - y_true``; ``L = mean(l)`` over every element.

    Args:
        delta: where the loss turns linear, ``> 0``, default 1.0.

    Shape:
        - y_pred: ``(N, *)``; y_true: the same.

    Gradient:
        ``dL/dy_pred = clip(r, -delta, delta) / size``.
    """

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if (
            isinstance(delta, bool)
            or not isinstance(delta, (int, float))
            or not math.isfinite(delta)
            or delta <= 0
        ):
            raise ConfigError(f"Huber: delta must be a finite number > 0, got {delta!r}")
        self.delta = float(delta)

    def _value(self, r: np.ndarray) -> np.ndarray:
        # q (a - q / 2) with q = min(a, delta): a^2 / 2 inside, delta (a - delta / 2) beyond, and
        # no square of a large residual in the branch not taken (an overflow warning for nothing)
        a = np.abs(r)
        q = np.minimum(a, self.delta)
        return q * (a - 0.5 * q)

    def _derivative(self, r: np.ndarray) -> np.ndarray:
        return np.clip(r, -self.delta, self.delta)

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta}
