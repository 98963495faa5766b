"""MaxPool2d's compiled kernels (the ``[jit]`` extra) for its commonest form: 2x2 windows at stride 2.

Without padding, each output ``y[n, c, a, b]`` is the maximum of the window
``x[n, c, 2a:2a+2, 2b:2b+2]`` (a last odd row or column is left out, as
PyTorch's floor mode does). Its argmax is the offset ``k = 2i + j`` of the
winner, by PyTorch's rule: the first maximum in row-major order, and for a
window holding NaN its last NaN (``v > best or isnan(v)`` replaces the best).

- :func:`max_pool_2x2`: ``y`` and, when asked, the offsets (``uint8``), one
  pass over ``x``: the two rows' maxima, then the pair of theirs.
- :func:`max_pool_2x2_backward`: ``dx`` in one pass, each input taking
  ``g[n, c, a, b]`` where it won its window and 0 elsewhere.

NumPy's path (:mod:`plugins.pool_ops`) takes ``kh + kw - 2`` passes for the
maximum, ``kh kw`` for the offsets and ``kh kw`` for the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled

__all__ = ["max_pool_2x2", "max_pool_2x2_backward"]


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True)

    @jit
    def forward(x: Any, y: Any) -> None:
        n, c = x.shape[:2]
        oh, ow = y.shape[2], y.shape[3]
        pair = np.empty(2 * ow, x.dtype)
        for i in range(n):
            for ch in range(c):
                for a in range(oh):
                    top, bottom, out = x[i, ch, 2 * a], x[i, ch, 2 * a + 1], y[i, ch, a]
                    for col in range(2 * ow):  # the column maxima of the two rows
                        u, v = top[col], bottom[col]
                        pair[col] = v if (v > u) | (v != v) else u
                    for b in range(ow):
                        u, v = pair[2 * b], pair[2 * b + 1]
                        out[b] = v if (v > u) | (v != v) else u

    @jit
    def forward_argmax(x: Any, y: Any, argmax: Any) -> None:
        n, c = x.shape[:2]
        oh, ow = y.shape[2], y.shape[3]
        pair = np.empty(2 * ow, x.dtype)  # each column's winner of the window's two rows
        rank = np.empty(2 * ow, np.uint8)  # its offset k = 2i + j
        for i in range(n):
            for ch in range(c):
                for a in range(oh):
                    top, bottom = x[i, ch, 2 * a], x[i, ch, 2 * a + 1]
                    for col in range(2 * ow):  # contiguous rows: this pass vectorises
                        u, v = top[col], bottom[col]
                        down = (v > u) | (v != v)
                        pair[col] = v if down else u
                        rank[col] = 2 * np.uint8(down) + (col & 1)
                    # The columns' winners meet by the row-major rule: the larger value; on a tie
                    # the smaller offset; a NaN beats a number, and of two NaNs the larger offset.
                    # Two loops of one store stream each, branch-free: both vectorise.
                    out, offsets = y[i, ch, a], argmax[i, ch, a]
                    for b in range(ow):
                        u, v, kl, kr = pair[2 * b], pair[2 * b + 1], rank[2 * b], rank[2 * b + 1]
                        right = (v > u) | ((v == u) & (kr < kl)) | ((v != v) & ((u == u) | (kr > kl)))
                        out[b] = v if right else u
                    for b in range(ow):
                        u, v, kl, kr = pair[2 * b], pair[2 * b + 1], rank[2 * b], rank[2 * b + 1]
                        right = (v > u) | ((v == u) & (kr < kl)) | ((v != v) & ((u == u) | (kr > kl)))
                        offsets[b] = kr if right else kl

    @jit
    def backward(g: Any, argmax: Any, dx: Any) -> None:
        n, c, oh, ow = g.shape
        h, w = dx.shape[2], dx.shape[3]
        zero = np.zeros(1, dx.dtype)[0]
        for i in range(n):
            for ch in range(c):
                for a in range(oh):
                    gr, kr = g[i, ch, a], argmax[i, ch, a]
                    for r in range(2):  # each input row written once, in order
                        row = dx[i, ch, 2 * a + r]
                        for b in range(ow):
                            v, k = gr[b], kr[b]
                            row[2 * b] = v if k == 2 * r else zero
                            row[2 * b + 1] = v if k == 2 * r + 1 else zero
                        for col in range(2 * ow, w):
                            row[col] = zero
                for r in range(2 * oh, h):
                    dx[i, ch, r, :] = zero

    return {"forward": forward, "forward_argmax": forward_argmax, "backward": backward}


def max_pool_2x2(x: np.ndarray, with_argmax: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``y`` ``(N, C, H // 2, W // 2)`` of a contiguous ``x`` ``(N, C, H, W)``, and the offsets if asked."""
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    if not with_argmax:
        _kernels()["forward"](x, y)
        return y, None
    argmax = np.empty(y.shape, np.uint8)
    _kernels()["forward_argmax"](x, y, argmax)
    return y, argmax


def max_pool_2x2_backward(g: np.ndarray, argmax: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """``dx`` of ``input_shape``: ``g`` routed to each window's winner (:func:`max_pool_2x2`'s offsets)."""
    dx = np.empty(input_shape, g.dtype)
    _kernels()["backward"](np.ascontiguousarray(g), argmax, dx)
    return dx
