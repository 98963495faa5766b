"""Base class of losses: ``forward(y_pred, y_true) -> float``, ``backward()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.errors import ShapeError

__all__ = ["Loss"]


class Loss(Configurable):
    """A scalar objective with a hand-derived gradient.

    ``forward`` returns the mean loss over the batch (a Python float) and caches
    what ``backward`` needs; ``backward()`` returns ``dL/d y_pred`` of the same
    shape as ``y_pred``, already divided by the batch size, so layers never
    divide again.

    ``forward(y_pred, y_true, sample_weight=None)``: an optional weight per
    sample, shape ``(N,)``, follows Keras: the loss becomes the batch mean of
    ``w_i * l_i``, i.e. ``sum_i w_i l_i / N`` (the weights are not
    renormalised), and the gradient of sample ``i`` is scaled by ``w_i``. The
    fit loop's ``class_weight`` is applied through it.
    """

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None, **kwargs: Any
    ) -> float:
        return self.forward(y_pred, y_true, sample_weight, **kwargs)

    # -- helpers for subclasses ------------------------------------------

    def _check_pred(self, y_pred: Any) -> np.ndarray:
        """``y_pred`` as a floating array with a batch axis, else ShapeError."""
        y_pred = np.asarray(y_pred)
        if not np.issubdtype(y_pred.dtype, np.floating):
            y_pred = y_pred.astype(np.float64)
        if y_pred.ndim == 0:
            raise ShapeError(f"{type(self).__name__}: y_pred must have a batch axis, got a scalar")
        return y_pred

    def _sample_weight(self, sample_weight: Any, n: int, dtype: np.dtype) -> np.ndarray | None:
        """``sample_weight`` as an ``(N,)`` array of ``dtype`` (or ``None``), else ShapeError."""
        if sample_weight is None:
            return None
        weight = np.asarray(sample_weight, dtype=dtype)
        if weight.ndim == 2 and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.shape != (n,):
            raise ShapeError(
                f"{type(self).__name__}: sample_weight must have shape ({n},) (one weight per sample), "
                f"got {weight.shape}"
            )
        return weight

    @property
    def name(self) -> str:
        from framework.registry.manager import REGISTRY

        return REGISTRY.name_of("losses", self) or type(self).__name__

    def get_config(self) -> dict[str, Any]:
        return {}
