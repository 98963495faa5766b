"""``LayerNorm``: normalization over each sample's trailing axes, with its hand-derived backward.

Registered by the ``plugins.normalization`` entry point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.errors import ConfigError, ShapeError
from framework.runtime.dtype import get_default_dtype

__all__ = ["LayerNorm"]


def _positive_float(layer: str, arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{layer}: {arg} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{layer}: {arg} must be a positive number, got {value!r}")
    return float(value)


class LayerNorm(Layer):
    """Layer normalization over the last ``len(normalized_shape)`` axes (PyTorch semantics).

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, with the mean and
    biased variance taken over the trailing axes given by ``normalized_shape``,
    separately for each sample (and each leading position). It behaves the
    same in training and eval mode.

    Args:
        normalized_shape: the trailing shape to normalise over; an int ``D``
            means the last axis of size ``D``.
        eps: added to the variance for numerical stability (default ``1e-5``).
        elementwise_affine: whether to learn ``weight`` and ``bias`` of shape
            ``normalized_shape`` (default ``True``).
        bias: whether to learn the additive ``bias`` when affine (default ``True``).
        name: layer name.

    Shape:
        - Input: ``(N, *, *normalized_shape)``.
        - Output: the same as the input.

    Attributes:
        weight: ``Parameter`` of shape ``normalized_shape``, initialised to ones
            (``None`` when ``elementwise_affine=False``).
        bias: ``Parameter`` of shape ``normalized_shape``, initialised to zeros
            (``None`` when ``elementwise_affine=False`` or ``bias=False``).

    Gradient:
        Over each group of ``D = prod(normalized_shape)`` values, with
        ``xhat = (x - mu) * r``, ``r = 1 / sqrt(var + eps)``, ``g = dL/dy`` and
        ``dxhat = g * weight``:
        ``dL/dx = (r / D) * (D * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))``;
        ``dL/dweight = sum over the leading axes of g * xhat`` and
        ``dL/dbias = sum over the leading axes of g``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import LayerNorm
        >>> layer = LayerNorm(4)
        >>> y = layer(np.arange(8, dtype=np.float32).reshape(2, 4))
        >>> y.shape, bool(np.allclose(y.mean(axis=-1), 0.0, atol=1e-6))
        ((2, 4), True)
    """

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        if (
            not isinstance(shape, (tuple, list))
            or not shape
            or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in shape)
        ):
            raise ConfigError(
                "LayerNorm: normalized_shape must be a positive integer or a non-empty tuple of "
                f"positive integers, got {normalized_shape!r}"
            )
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps = _positive_float("LayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.use_bias = bool(bias)
        dtype = get_default_dtype()
        self.weight = (
            Parameter(np.ones(self.normalized_shape, dtype=dtype)) if self.elementwise_affine else None
        )
        self.bias = (
            Parameter(np.zeros(self.normalized_shape, dtype=dtype))
            if self.elementwise_affine and self.use_bias
            else None
        )

    def build(self, input_shape: Any) -> None:
        self._validate_shape(input_shape)
        super().build(input_shape)

    def _validate_shape(self, shape: Any) -> None:
        k = len(self.normalized_shape)
        if shape is None or len(shape) < k + 1 or tuple(shape[-k:]) != self.normalized_shape:
            expected = format_shape(("N", "*", *self.normalized_shape))
            raise ShapeError(
                f"{self.describe()} expected input of shape {expected}, got {format_shape(shape)}"
            )

    def _check_input(self, x: Any) -> None:
        self._validate_shape(getattr(x, "shape", None))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        axes = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        xhat = x - mean
        var = np.mean(xhat * xhat, axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat *= inv_std
        if ctx.record:
            ctx.xhat, ctx.inv_std = xhat, inv_std
        if self.weight is None:
            return xhat.copy()
        y = xhat * self.weight.data
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        xhat, inv_std = ctx.xhat, ctx.inv_std
        g = grad_out
        k = len(self.normalized_shape)
        axes = tuple(range(g.ndim - k, g.ndim))
        lead = tuple(range(g.ndim - k))
        if self.weight is not None:
            self.weight.add_grad(np.sum(g * xhat, axis=lead))
            dxhat = g * self.weight.data
        else:
            dxhat = g
        if self.bias is not None:
            self.bias.add_grad(g.sum(axis=lead))
        d = math.prod(self.normalized_shape)
        dx = dxhat - dxhat.sum(axis=axes, keepdims=True) / d
        dx -= xhat * (np.sum(dxhat * xhat, axis=axes, keepdims=True) / d)
        dx *= inv_std
        return dx

    def output_shape(self, input_shape: Any) -> Any:
        self._validate_shape(input_shape)
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.use_bias,
        }

    def extra_repr(self) -> str:
        bias = "" if self.use_bias else ", bias=False"
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}{bias}"
