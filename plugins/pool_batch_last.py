"""MaxPool2d on batch-last activations ``(C, H, W, N)``: 2x2 windows at stride 2, unpadded.

Inside a model, consecutive convolution, BatchNorm, activation and pooling
layers pass their activations batch-last (:mod:`framework.models.layouts`).
In that layout each window's four inputs are rows of ``N`` contiguous values,
``x[c, 2a + i, 2b + j, :]``, so the maximum and its offset are taken for the
whole batch at once, by the rule of :mod:`plugins.pool_kernels` (the first
maximum in row-major order, a window's last NaN where it holds NaN):

- :func:`max_pool_2x2_last`: ``y`` ``(C, H // 2, W // 2, N)`` and, when asked,
  the offsets ``k = 2i + j`` of the winners (``uint8``, same shape);
- :func:`max_pool_2x2_last_backward`: ``dx`` ``(C, H, W, N)``, each input taking
  ``g[c, a, b, n]`` where it won its window and 0 elsewhere (a last odd row or
  column receives 0).

Compiled kernels run where :func:`framework.runtime.jit.takes` the arrays;
NumPy's path computes the same selections with ``np.where``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime import jit
from framework.runtime.jit import compiled

__all__ = [
    "avg_pool_2x2_last",
    "avg_pool_2x2_last_backward",
    "max_pool_2x2_last",
    "max_pool_2x2_last_backward",
]


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    kernel = numba.njit(nogil=True, cache=True)

    @kernel
    def forward(x: Any, y: Any, argmax: Any, with_argmax: bool) -> None:
        c, oh, ow, n = y.shape
        for ch in range(c):
            for a in range(oh):
                for b in range(ow):
                    u0, u1 = x[ch, 2 * a, 2 * b], x[ch, 2 * a, 2 * b + 1]
                    u2, u3 = x[ch, 2 * a + 1, 2 * b], x[ch, 2 * a + 1, 2 * b + 1]
                    out, offsets = y[ch, a, b], argmax[ch, a, b]
                    for i in range(n):
                        v0, v1, v2, v3 = u0[i], u1[i], u2[i], u3[i]
                        right_top = (v1 > v0) | (v1 != v1)
                        top = v1 if right_top else v0
                        right_bottom = (v3 > v2) | (v3 != v3)
                        bottom = v3 if right_bottom else v2
                        lower = (bottom > top) | (bottom != bottom)
                        out[i] = bottom if lower else top
                        if with_argmax:
                            offsets[i] = (2 + right_bottom) if lower else np.uint8(right_top)

    @kernel
    def backward(g: Any, argmax: Any, dx: Any) -> None:
        c, oh, ow, n = g.shape
        h, w = dx.shape[1], dx.shape[2]
        rows_g, rows_k = g.reshape(c, oh, ow * n), argmax.reshape(c, oh, ow * n)
        rows_dx = dx.reshape(c, h, w * n)
        zero = np.zeros(1, dx.dtype)[0]
        for ch in range(c):
            for a in range(oh):
                gr, kr = rows_g[ch, a], rows_k[ch, a]
                for i in range(2):  # each output row written once, in order (one store stream)
                    row = rows_dx[ch, 2 * a + i]
                    for b in range(ow):
                        for j in range(2):
                            k, start = np.uint8(2 * i + j), (2 * b + j) * n
                            for s in range(n):
                                row[start + s] = gr[b * n + s] if kr[b * n + s] == k else zero
                    for col in range(2 * ow * n, w * n):  # a last odd column
                        row[col] = zero
            for r in range(2 * oh, h):  # a last odd row
                rows_dx[ch, r, :] = zero

    return {"forward": forward, "backward": backward}


def _first_max(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max, v won)`` of two candidates by PyTorch's rule: ``v`` wins when larger or NaN."""
    wins = (v > u) | np.isnan(v)
    return np.where(wins, v, u), wins


def max_pool_2x2_last(x: np.ndarray, with_argmax: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``y`` ``(C, H // 2, W // 2, N)`` of a batch-last ``x`` ``(C, H, W, N)``, and the offsets if asked."""
    c, h, w, n = x.shape
    oh, ow = h // 2, w // 2
    if jit.takes(x) and x.size > 0:
        y = np.empty((c, oh, ow, n), x.dtype)
        argmax = np.empty(y.shape if with_argmax else (c, oh, ow, 0), np.uint8)
        _kernels()["forward"](x, y, argmax, with_argmax)
        return y, argmax if with_argmax else None
    quads = x[:, : 2 * oh, : 2 * ow].reshape(c, oh, 2, ow, 2, n)
    top, right_top = _first_max(quads[:, :, 0, :, 0], quads[:, :, 0, :, 1])
    bottom, right_bottom = _first_max(quads[:, :, 1, :, 0], quads[:, :, 1, :, 1])
    y, lower = _first_max(top, bottom)
    if not with_argmax:
        return y, None
    offsets = np.where(lower, 2 + right_bottom, right_top).astype(np.uint8)
    return y, offsets


def max_pool_2x2_last_backward(
    g: np.ndarray, argmax: np.ndarray, input_shape: tuple[int, int, int, int]
) -> np.ndarray:
    """``dx`` ``(C, H, W, N)``: ``g`` ``(C, H // 2, W // 2, N)`` routed to each window's winner."""
    g = np.ascontiguousarray(g)
    if jit.takes(g) and g.size > 0:
        dx = np.empty(input_shape, g.dtype)
        _kernels()["backward"](g, argmax, dx)
        return dx
    c, oh, ow, n = g.shape
    dx = np.zeros(input_shape, g.dtype)
    quads = dx[:, : 2 * oh, : 2 * ow].reshape(c, oh, 2, ow, 2, n)
    for k in range(4):
        quads[:, :, k // 2, :, k % 2] = np.where(argmax == k, g, 0)
    return dx


def avg_pool_2x2_last(x: np.ndarray) -> np.ndarray:
    """``y`` ``(C, H // 2, W // 2, N)``: each 2x2 window's mean, of a batch-last ``x`` ``(C, H, W, N)``.

    Summed as NCHW's :func:`~plugins.pool_ops.avg_pool2d` sums (the two rows,
    then the two columns of that), so the results are the same to the bit.
    """
    c, h, w, n = x.shape
    oh, ow = h // 2, w // 2
    quads = x[:, : 2 * oh, : 2 * ow].reshape(c, oh, 2, ow, 2, n)
    rows = quads[:, :, 0] + quads[:, :, 1]  # (C, OH, OW, 2, N)
    y = rows[:, :, :, 0] + rows[:, :, :, 1]
    y *= y.dtype.type(0.25)
    return y


def avg_pool_2x2_last_backward(g: np.ndarray, input_shape: tuple[int, int, int, int]) -> np.ndarray:
    """``dx`` ``(C, H, W, N)``: a quarter of each ``g`` ``(C, H // 2, W // 2, N)`` to each of its window's
    inputs, 0 for a last odd row or column."""
    c, oh, ow, n = g.shape
    dx = np.zeros(input_shape, g.dtype)
    quads = dx[:, : 2 * oh, : 2 * ow].reshape(c, oh, 2, ow, 2, n)
    share = g * g.dtype.type(0.25)
    for i in range(2):
        for j in range(2):
            quads[:, :, i, :, j] = share
    return dx
