"""The row-grid convolution's compiled kernels (the ``[jit]`` extra): its copies in one pass each.

The row grid (:mod:`plugins.conv_grid`) runs a convolution as one product
``W (O, C*kh*kw) @ cols (C*kh*kw, OH*N*Wp)`` over the input copied into a
padded channel-major layout ``(C, Hp, N, Wp)``, where every kernel offset is
a shift (:func:`plugins.im2col.im2col_grid`); its output comes out as
``(O, OH, N, Wp)``. The shifted copies and additions, and the copies into and out of the padded
layout, run at memory speed in NumPy (kernels for them were measured 1.2-5x
slower); the two transposes between the product's layout and NCHW do not:

- :func:`grid_to_nchw`: the product ``(O, OH, N, Wp)`` to ``y (N, O, OH, OW)``
  with the bias added (the conv2d_layer shapes at batch 64: 0.71 -> 0.23 ms);
- :func:`nchw_to_grid`: ``g (N, O, OH, OW)`` to the grid layout, zero in the
  columns ``b >= OW`` (0.40 -> 0.17 ms).

Each is one pass over its output and gives NumPy's values to the bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled

__all__ = ["grid_to_nchw", "nchw_to_grid"]


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True)

    @jit
    def to_nchw(product: Any, bias: Any, y: Any) -> None:
        n, o, oh, ow = y.shape
        for s in range(n):
            for k in range(o):
                b = bias[k]
                for a in range(oh):
                    src, dst = product[k, a, s], y[s, k, a]
                    for col in range(ow):
                        dst[col] = src[col] + b

    @jit
    def to_nchw_copy(product: Any, y: Any) -> None:
        n, o, oh, ow = y.shape
        for s in range(n):
            for k in range(o):
                for a in range(oh):
                    src, dst = product[k, a, s], y[s, k, a]
                    for col in range(ow):
                        dst[col] = src[col]

    @jit
    def to_grid(g: Any, grid: Any) -> None:
        n, o, oh, ow = g.shape
        wp = grid.shape[3]
        for k in range(o):
            for a in range(oh):
                for s in range(n):
                    src, dst = g[s, k, a], grid[k, a, s]
                    for col in range(ow):
                        dst[col] = src[col]
                    for col in range(ow, wp):
                        dst[col] = 0

    return {
        "to_nchw": to_nchw,
        "to_nchw_copy": to_nchw_copy,
        "to_grid": to_grid,
    }


def grid_to_nchw(product: np.ndarray, bias: np.ndarray | None, ow: int) -> np.ndarray:
    """``y (N, O, OH, OW)`` from the product ``(O, OH, N, Wp)``, plus ``bias`` per channel when given."""
    o, oh, n, _ = product.shape
    y = np.empty((n, o, oh, ow), product.dtype)
    if bias is None:
        _kernels()["to_nchw_copy"](product, y)
    else:
        _kernels()["to_nchw"](product, bias.astype(product.dtype, copy=False), y)
    return y


def nchw_to_grid(g: np.ndarray, wp: int) -> np.ndarray:
    """``g (N, O, OH, OW)`` laid out as the product ``(O, OH, N, Wp)``, zero in the columns ``b >= OW``."""
    n, o, oh, _ = g.shape
    grid = np.empty((o, oh, n, wp), g.dtype)
    _kernels()["to_grid"](np.ascontiguousarray(g), grid)
    return grid
