"""The normalising built-in activations: Softmax and LogSoftmax along one axis.

Both are in the context form (what backward needs lives on the per-call
``ctx``) and carry a ``link`` (``"softmax"`` / ``"log_softmax"``) that
``Model.compile`` reads to check that the loss fits the model's output.
Registration happens in :mod:`plugins.activations`. float16 takes its sums
along the axis in float32 (PyTorch's half softmax does too): along a strided
axis a float16 sum of 8192 values near 1 stops at 2048.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import format_shape
from framework.errors import ConfigError, ShapeError
from framework.runtime.dtype import accumulation_dtype
from plugins.activation_fns import ActivationLayer
from plugins.activation_math import as_float

__all__ = ["Softmax", "LogSoftmax"]


class _AxisActivation(ActivationLayer):
    """Shared ``axis`` (alias ``dim``) handling of Softmax and LogSoftmax."""

    def __init__(self, axis: int = -1, *, dim: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        owner = type(self).__name__
        if dim is not None:
            if axis != -1 and axis != dim:
                raise ConfigError(f"{owner}: got axis={axis!r} and dim={dim!r}; pass only one of them")
            axis = dim
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ConfigError(f"{owner}: axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def build(self, input_shape: Any) -> None:
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ShapeError(
                f"{self.describe()}: axis {self.axis} is out of range for input of shape "
                f"{format_shape(input_shape)} (rank {rank})"
            )
        super().build(input_shape)

    def _check_axis(self, x: np.ndarray) -> None:
        if not -x.ndim <= self.axis < x.ndim:
            raise ShapeError(
                f"{self.describe()}: axis {self.axis} is out of range for input of shape "
                f"{format_shape(x.shape)} (rank {x.ndim})"
            )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


class Softmax(_AxisActivation):
    """Softmax along ``axis``: ``y_i = exp(x_i - m) / sum_j exp(x_j - m)``, ``m = max_j x_j``.

    Subtracting the maximum leaves the result unchanged and keeps ``exp`` from
    overflowing. ``link = "softmax"``: a model ending in it pairs with a loss
    expecting softmax probabilities (``categorical_crossentropy``).

    Non-finite rows: ``-inf`` entries get probability 0; a row of only ``-inf``
    (nothing to normalise), or one holding ``+inf`` or NaN, gives NaN, as
    ``torch.softmax`` (NumPy warns). Attention's fully masked rows give 0
    instead (:func:`plugins.attention.attention_forward`).

    Args:
        axis: the axis that sums to 1 (default -1); ``dim`` is accepted as
            PyTorch's name for it.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dy_i/dx_j = y_i (delta_ij - y_j)``, so
        ``dL/dx = y * (g - sum(g * y, axis))`` with ``g = dL/dy``.
    """

    link = "softmax"

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        self._check_axis(x)
        with np.errstate(over="ignore"):  # a spread past the float range: -inf, probability 0
            e = np.exp(x - np.max(x, axis=self.axis, keepdims=True))
        # float16 sums in float32: along a strided axis a float16 sum of 8192 values near 1 stops at 2048
        e /= np.sum(e, axis=self.axis, keepdims=True, dtype=accumulation_dtype(e.dtype))
        ctx.y = e
        return e

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        y = ctx.y
        row = np.sum(grad_out * y, axis=self.axis, keepdims=True, dtype=accumulation_dtype(y.dtype))
        return y * (grad_out - row.astype(y.dtype, copy=False))


class LogSoftmax(_AxisActivation):
    """Log-softmax along ``axis``: ``y_i = x_i - m - log sum_j exp(x_j - m)``, ``m = max_j x_j``.

    ``link = "log_softmax"``: the log-probabilities a negative log-likelihood
    loss expects. ``-inf`` entries give ``-inf``; a row of only ``-inf``, or
    one holding ``+inf`` or NaN, gives NaN, as ``torch.log_softmax``.

    Args:
        axis: the axis normalised over (default -1); ``dim`` is accepted too.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dy_i/dx_j = delta_ij - softmax(x)_j``, so
        ``dL/dx = g - softmax(x) * sum(g, axis)``.
    """

    link = "log_softmax"

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        self._check_axis(x)
        with np.errstate(over="ignore"):  # a spread past the float range: -inf, as the true value rounds
            shifted = x - np.max(x, axis=self.axis, keepdims=True)
        acc = accumulation_dtype(shifted.dtype)  # float16: the sum and the difference in float32
        log_sum = np.log(np.sum(np.exp(shifted), axis=self.axis, keepdims=True, dtype=acc))
        y = shifted - log_sum if acc is None else (shifted - log_sum).astype(shifted.dtype)
        if ctx.record:
            ctx.softmax = np.exp(y)
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        total = np.sum(grad_out, axis=self.axis, keepdims=True, dtype=accumulation_dtype(grad_out.dtype))
        return grad_out - ctx.softmax * total.astype(grad_out.dtype, copy=False)
