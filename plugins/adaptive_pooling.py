"""Built-in plugin: ``AdaptiveAvgPool1d``, ``AdaptiveAvgPool2d`` and ``AdaptiveMaxPool2d``.

PyTorch's bins: output cell ``i`` of ``O`` over an axis of size ``L`` covers
``[floor(i L / O), ceil((i + 1) L / O))``. The average pool is separable and
linear, so it is one small pooling matrix ``P`` (``O x L``, ``1/len`` inside a
bin) per axis: ``Y = P_h X P_w^T``, ``dX = P_h^T G P_w``. The max pool gathers
each bin, padded to the largest bin by repeating its last index (which
changes no maximum), takes the arg-max, and scatters the gradient back to the
winners.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "adaptive_bins"]


def adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(start, end)`` index arrays of PyTorch's adaptive bins."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _pool_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    start, end = adaptive_bins(size, out)
    cols = np.arange(size)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _gather_index(size: int, out: int) -> np.ndarray:
    """``(out, kmax)`` indices of each bin, the short bins padded with their last index."""
    start, end = adaptive_bins(size, out)
    kmax = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(kmax), end[:, None] - 1)


def _output_size(owner: str, value: Any, n: int) -> tuple[int | None, ...]:
    items = (value,) * n if isinstance(value, int) or value is None else tuple(value)
    if len(items) != n or any(
        v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1) for v in items
    ):
        raise ConfigError(
            f"{owner}: output_size must be a positive int or {n} of them (None keeps a size), got {value!r}"
        )
    return items


class _Adaptive(Layer):
    _rank = 4
    float_input = True  # an integer input is cast: its averages are not truncated

    def __init__(self, output_size: Any, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.output_size = _output_size(type(self).__name__, output_size, self._rank - 2)

    def _out(self, spatial: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(s if o is None else o for s, o in zip(spatial, self.output_size))

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None

    def _check(self, x: Any) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != self._rank:
            raise ShapeError(
                f"{self.describe()} expected a rank-{self._rank} input "
                f"(N, C, {'L' if self._rank == 3 else 'H, W'}), "
                f"got {format_shape(getattr(x, 'shape', None))}"
            )

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) != self._rank:
            raise ShapeError(
                f"{self.describe()} expected a rank-{self._rank} input, got {format_shape(input_shape)}"
            )
        return (*input_shape[:2], *self._out(tuple(input_shape[2:])))

    def get_config(self) -> dict[str, Any]:
        size = list(self.output_size)
        return {**super().get_config(), "output_size": size[0] if len(size) == 1 else size}


class AdaptiveAvgPool2d(_Adaptive):
    """Average pool to a fixed output size (PyTorch's ``nn.AdaptiveAvgPool2d``).

    Args:
        output_size: ``(H_out, W_out)`` or one int for both; ``None`` keeps that axis.

    Shape:
        - Input: ``(N, C, H, W)``; Output: ``(N, C, H_out, W_out)``.

    Gradient:
        ``Y = P_h X P_w^T`` (pooling matrices), so ``dX = P_h^T G P_w``.
    """

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self._check(x)
        oh, ow = self._out(x.shape[2:])
        ph, pw = _pool_matrix(x.shape[2], oh, x.dtype), _pool_matrix(x.shape[3], ow, x.dtype)
        ctx.ph, ctx.pw = ph, pw
        return ph @ x @ pw.T

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return ctx.ph.T @ grad_out @ ctx.pw


class AdaptiveAvgPool1d(_Adaptive):
    """Average pool to a fixed length (PyTorch's ``nn.AdaptiveAvgPool1d``).

    Args:
        output_size: ``L_out``.

    Shape:
        - Input: ``(N, C, L)``; Output: ``(N, C, L_out)``.

    Gradient:
        ``Y = X P^T``, ``dX = G P``.
    """

    _rank = 3

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self._check(x)
        p = ctx.p = _pool_matrix(x.shape[2], self._out(x.shape[2:])[0], x.dtype)
        return x @ p.T

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out @ ctx.p


class AdaptiveMaxPool2d(_Adaptive):
    """Max pool to a fixed output size (PyTorch's ``nn.AdaptiveMaxPool2d``, ``return_indices=False``).

    Args:
        output_size: ``(H_out, W_out)`` or one int; ``None`` keeps that axis.

    Shape:
        - Input: ``(N, C, H, W)``; Output: ``(N, C, H_out, W_out)``.

    Gradient:
        Each output's gradient goes to the input element that was its maximum
        (the first one in a tie); elements that win several overlapping bins
        receive the sum.
    """

    window_max = True

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self._check(x)
        n, c, h, w = x.shape
        oh, ow = self._out((h, w))
        ih, iw = _gather_index(h, oh), _gather_index(w, ow)
        # (N, C, oh, kh, ow, kw) -> (N, C, oh, ow, kh*kw)
        win = x[:, :, ih[:, :, None, None], iw[None, None, :, :]].transpose(0, 1, 2, 4, 3, 5)
        win = win.reshape(n, c, oh, ow, ih.shape[1] * iw.shape[1])  # explicit sizes: N may be 0
        arg = win.argmax(axis=-1)
        kw = iw.shape[1]
        rows = ih[np.arange(oh)[:, None], arg // kw]  # (N, C, oh, ow) input rows of the winners
        cols = iw[np.arange(ow)[None, :], arg % kw]
        ctx.flat_index = (rows * w + cols).reshape(n * c, oh * ow)
        ctx.in_shape = x.shape
        return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        n, c, h, w = ctx.in_shape
        offsets = (np.arange(n * c) * (h * w))[:, None]
        dx = np.bincount(
            (ctx.flat_index + offsets).ravel(), weights=grad_out.reshape(-1), minlength=n * c * h * w
        )
        return dx.astype(grad_out.dtype, copy=False).reshape(ctx.in_shape)


@hookimpl
def register_layers(register: Any) -> None:
    """AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool2d."""
    register(AdaptiveAvgPool1d)
    register(AdaptiveAvgPool2d)
    register(AdaptiveMaxPool2d)
