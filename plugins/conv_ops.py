"""Pure functions behind the convolution and pooling layers (NCHW, any float dtype): the one import.

Notation: a batch ``x`` of shape ``(N, C, H, W)``, a kernel of ``(kh, kw)``,
strides ``(sh, sw)``, dilations ``(dh, dw)`` and padding ``((top, bottom),
(left, right))``. Along each spatial axis the number of output positions is::

    out = floor((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1

(for ``dilation=1`` and symmetric ``padding=p``: ``floor((size + 2p - k) / s) + 1``).

- :func:`im2col` gathers every receptive field into a columns matrix of shape
  ``(N, C*kh*kw, OH*OW)``, so a convolution is one (batched) matrix product
  ``W.reshape(out_ch, -1) @ cols -> (N, out_ch, OH*OW)``, already NCHW.
- :func:`col2im` is its adjoint: ``<im2col(x), c> == <x, col2im(c)>``. It
  scatter-adds each column entry back onto the input pixel it was read from,
  looping over the ``kh*kw`` kernel offsets only.
- :func:`max_pool2d` / :func:`avg_pool2d` reduce over the same windows with
  strided slices, separably (the ``kh`` row slices, then the ``kw`` column
  slices of that); :func:`avg_pool2d_backward` is the adjoint;
  :func:`max_pool2d_argmax` finds each window's first maximum from the input
  and the output, and :func:`max_pool2d_backward` routes the gradient there,
  one pass per kernel offset;
  :func:`pool_output_size` and :func:`avg_pool_divisor` give PyTorch's
  ``ceil_mode`` and ``count_include_pad`` rules.
- ``windows=(OH, OW)`` limits the functions taking it to the first ``OH x OW``
  window positions, for a transposed convolution whose output holds more
  positions than its input has pixels.

The functions live in three modules, all importable from here:
:mod:`plugins.conv_geometry` (sizes and padding), :mod:`plugins.im2col`
(im2col, col2im) and :mod:`plugins.pool_ops` (the pools); this module adds
the per-channel helpers :func:`channel_sums` and :func:`per_channel` that
BatchNorm and the convolutions share.

Padding may be an int (all sides), a pair ``(ph, pw)`` (both sides of each
axis) or a pair of pairs ``((top, bottom), (left, right))``; the last form
expresses the asymmetric padding of ``padding="same"`` with an even kernel.
"""

from __future__ import annotations

import numpy as np

from framework.runtime.dtype import accumulation_dtype
from plugins.conv_geometry import (
    Padding2d,
    Pair,
    conv_output_size,
    expand_padding,
    offset_slices,
    pad2d,
    pair,
    same_padding,
)
from plugins.im2col import (
    col2im,
    col2im_batch_last,
    col2im_grid,
    grid_shape,
    im2col,
    im2col_batch_last,
    im2col_grid,
    window_view,
)
from plugins.pool_ops import (
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool_divisor,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
    pool_output_size,
)

__all__ = [
    "Pair",
    "Padding2d",
    "channel_sums",
    "per_channel",
    "pair",
    "expand_padding",
    "same_padding",
    "conv_output_size",
    "pad2d",
    "offset_slices",
    "window_view",
    "im2col",
    "col2im",
    "im2col_batch_last",
    "col2im_batch_last",
    "grid_shape",
    "im2col_grid",
    "col2im_grid",
    "max_pool2d",
    "max_pool2d_argmax",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pool_output_size",
    "avg_pool_divisor",
]


def channel_sums(a: np.ndarray) -> np.ndarray:
    """``a`` of shape ``(N, C, *spatial)`` summed over every axis but the channel axis 1: ``(C,)``.

    For a contiguous ``a``: two matrix-vector products with vectors of ones,
    first over the batch (one BLAS call over the whole array, on the BLAS
    threads), then over the spatial positions -- 2-4x faster than
    ``a.sum(axis=(0, 2, 3))``, whose reduction strides across channels
    (128x32x14x14 float32: 27 us).
    """
    n, c = a.shape[:2]
    if not a.flags.c_contiguous or a.size == 0:
        return a.sum(axis=(0, *range(2, a.ndim)), dtype=accumulation_dtype(a.dtype))  # float16: in float32
    per_position = np.matmul(np.ones(n, dtype=a.dtype), a.reshape(n, -1))  # (C*S,)
    return np.matmul(per_position.reshape(c, -1), np.ones(per_position.size // c, dtype=a.dtype))


def per_channel(op: np.ufunc, x: np.ndarray, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``op(x, v)`` with ``v`` (``C`` values, any shape) applied along the channel axis 1 of ``x``.

    For a contiguous ``(N, C, *spatial)`` ``x`` the ``C`` values are repeated
    over the spatial size into one row of ``C * S`` and ``x`` is viewed as
    ``(N, C * S)``: NumPy's inner loop then runs over whole contiguous rows
    instead of ``N * C`` short runs against a broadcast value, about 1.5x
    faster (128x32x14x14 float32: 111 against 175 us). The result and its
    dtype are those of broadcasting ``v`` as ``(1, C, 1, ...)``.
    """
    c = x.shape[1]
    v = np.asarray(v).reshape(c)
    if x.ndim > 2 and x.size and x.flags.c_contiguous and (out is None or out.flags.c_contiguous):
        n = x.shape[0]
        rows = x.reshape(n, -1)
        row = np.repeat(v, rows.shape[1] // c if c else 0)
        result = op(rows, row, out=None if out is None else out.reshape(n, -1))
        return result.reshape(x.shape)
    return op(x, v.reshape((1, c) + (1,) * (x.ndim - 2)), out=out)
