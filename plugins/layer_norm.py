"""``LayerNorm``: normalization over each sample's trailing axes, with its hand-derived backward.

Registered by the ``plugins.normalization`` entry point.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, positive_number
from framework.errors import ConfigError, ShapeError
from framework.runtime import jit
from framework.runtime.dtype import get_default_dtype
from plugins import ln_kernels

__all__ = ["LayerNorm", "safe_inv_std"]


@functools.lru_cache(maxsize=32)
def _ones(length: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``length`` ones, shared: row and column sums as BLAS products."""
    ones = np.ones(length, dtype=dtype)
    ones.flags.writeable = False
    return ones


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the statistics are taken in: float32 for half precision, float64 for integers."""
    if dtype.kind != "f":
        return np.dtype(np.float64)  # NumPy's mean of integers
    return dtype if dtype.itemsize >= 4 else np.dtype(np.float32)


def safe_inv_std(centred: np.ndarray, var: np.ndarray, eps: float, axis: int) -> np.ndarray:
    """``1 / sqrt(var + eps)``, also where the squares of ``var = mean(centred^2)`` overflowed.

    ``centred`` holds the groups along ``axis``; ``var`` is their mean square,
    ``axis`` kept (size 1). A group of finite values whose squares overflow
    (``|x|`` past ``~1.8e19`` in float32, ``~1.3e154`` in float64) has
    ``var = inf`` and would normalise to 0, silently; there the mean square is
    taken of ``centred / s``, ``s = max |centred|``, and the result is
    ``1 / (s sqrt(mean((centred / s)^2)))`` (``eps / s^2`` is below the float range).
    """
    r = 1.0 / np.sqrt(var + eps)
    overflowed = np.isposinf(var)
    if overflowed.any():
        scale = np.max(np.abs(centred), axis=axis, keepdims=True)
        with np.errstate(invalid="ignore"):  # a group holding inf or NaN stays NaN
            unit = centred / scale
            fixed = 1.0 / (scale * np.sqrt(np.mean(unit * unit, axis=axis, keepdims=True)))
        r = np.where(overflowed, fixed, r)
    return r


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
    float_input = True  # an integer or boolean input is cast to the default float dtype

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
        self.eps = positive_number("LayerNorm", "eps", eps)
        self.elementwise_affine = check_bool("LayerNorm", "elementwise_affine", elementwise_affine)
        self.use_bias = check_bool("LayerNorm", "bias", bias)
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
        # (M, d): one row per normalised sample; the row sums are products with ones (BLAS)
        d = math.prod(self.normalized_shape)
        # float16 sums of a few hundred values overflow: half precision computes in float32
        rows = np.ascontiguousarray(x, dtype=_compute_dtype(x.dtype)).reshape(-1, d)
        out_dtype = x.dtype if x.dtype.kind == "f" else rows.dtype
        if self._kernels_apply(rows):  # compiled: each row read once per pass, x and its moments kept
            mean, var = ln_kernels.row_moments(rows)
            if not np.isposinf(var).any():  # an overflowed row: NumPy's path rescales it
                inv_std = (1.0 / np.sqrt(var + self.eps)).astype(rows.dtype, copy=False)
                gamma, beta = self._affine(rows.dtype)
                if ctx.record:
                    ctx.xhat, ctx.rows, ctx.mean, ctx.inv_std = None, rows, mean, inv_std
                y = ln_kernels.normalize(rows, mean, inv_std, gamma, beta)
                return y.astype(out_dtype, copy=False).reshape(x.shape)
        f = rows.dtype.type
        ones = _ones(d, rows.dtype)
        xhat = rows - ((rows @ ones) * f(1.0 / d))[:, None]  # centred; normalised in place below
        with np.errstate(over="ignore"):  # squares past the float range: see safe_inv_std
            var = np.einsum("ij,ij->i", xhat, xhat)[:, None] * f(1.0 / d)
        inv_std = safe_inv_std(xhat, var, self.eps, 1).astype(rows.dtype, copy=False)
        xhat *= inv_std
        if ctx.record:
            ctx.xhat, ctx.inv_std = xhat, inv_std
        if self.weight is None:
            return xhat.astype(out_dtype).reshape(x.shape)  # a copy: xhat is kept
        y = xhat * self.weight.data.reshape(-1).astype(f, copy=False)
        if self.bias is not None:
            y += self.bias.data.reshape(-1)
        return y.astype(out_dtype, copy=False).reshape(x.shape)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        # dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), per row, with dxhat = g * gamma;
        # both means are products: dxhat @ 1 = g @ gamma and (dxhat xhat) @ 1 = (g xhat) @ gamma
        xhat, inv_std = ctx.xhat, ctx.inv_std
        if xhat is None:  # the compiled forward kept x and its moments
            return self._backward_kernels(ctx, grad_out)
        d = xhat.shape[1]
        g = np.ascontiguousarray(grad_out, dtype=xhat.dtype).reshape(xhat.shape)
        f = xhat.dtype.type
        ones = _ones(xhat.shape[0], xhat.dtype)
        gx = g * xhat
        if self.bias is not None:
            self.bias.add_grad((ones @ g).reshape(self.normalized_shape))
        if self.weight is not None:
            gamma = self.weight.data.reshape(-1).astype(f, copy=False)
            self.weight.add_grad((ones @ gx).reshape(self.normalized_shape))
            dx = g * gamma
            mean_dxhat, mean_dxhat_xhat = g @ gamma, gx @ gamma
        else:
            dx = g.copy()
            ones_d = _ones(d, xhat.dtype)
            mean_dxhat, mean_dxhat_xhat = g @ ones_d, gx @ ones_d
        mean_dxhat *= f(1.0 / d)
        mean_dxhat_xhat *= f(1.0 / d)
        np.multiply(xhat, mean_dxhat_xhat[:, None], out=gx)
        dx -= gx
        dx -= mean_dxhat[:, None]
        dx *= inv_std
        return dx.astype(grad_out.dtype, copy=False).reshape(grad_out.shape)

    def _kernels_apply(self, rows: np.ndarray) -> bool:
        """Whether this call runs :mod:`plugins.ln_kernels`: enabled, float rows, parameters alike."""
        return jit.takes(rows, *(None if p is None else p.data for p in (self.weight, self.bias)))

    def _affine(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """``gamma`` and ``beta`` as ``(D,)`` rows: ones and zeros where the layer has none."""
        d = math.prod(self.normalized_shape)
        gamma = _ones(d, dtype) if self.weight is None else self.weight.data.reshape(-1)
        beta = np.zeros(d, dtype) if self.bias is None else self.bias.data.reshape(-1)
        return gamma, beta

    def _backward_kernels(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        rows = ctx.rows
        g = np.ascontiguousarray(grad_out, dtype=rows.dtype).reshape(rows.shape)
        gamma, _ = self._affine(rows.dtype)
        dx, dgamma, dbeta = ln_kernels.backward(rows, g, ctx.mean, ctx.inv_std, gamma)
        if self.bias is not None:
            self.bias.add_grad(dbeta.astype(rows.dtype).reshape(self.normalized_shape))
        if self.weight is not None:
            self.weight.add_grad(dgamma.astype(rows.dtype).reshape(self.normalized_shape))
        return dx.astype(grad_out.dtype, copy=False).reshape(grad_out.shape)

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
