"""The convolution lowerings' compiled kernels (the ``[jit]`` extra): im2col, col2im and the layout copies.

With a kernel of ``(kh, kw)``, strides ``(sh, sw)``, dilations ``(dh, dw)``
and padding ``(top, left)`` (the bottom and right padding only set the
output size ``OH x OW``), the input pixel of kernel offset ``(i, j)`` at
output position ``(a, b)`` is ``(a sh + i dh - top, b sw + j dw - left)``,
zero outside the image (:mod:`plugins.im2col`'s maths):

- :func:`im2col`: the per-sample columns ``(N, C*kh*kw, OH*OW)``; each
  image plane is copied into a zero-padded scratch plane once, then every
  row of columns is ``OH`` copies of ``OW`` values from it.
- :func:`im2col_batch_last`: the columns ``(C*kh*kw, OH*OW*N)``; the input
  is transposed once to ``(C, H, W, N)``, where (column stride 1) each row of
  columns is ``OH`` contiguous runs of up to ``OW*N`` values.
- :func:`col2im_batch_last`: its adjoint, adding each run back into a
  ``(C, H, W, N)`` buffer (one channel's ``H*W*N`` values stay in cache
  while its ``kh*kw`` rows are added, in the order NumPy adds them, so the
  result is the same to the bit), then transposed to ``(N, C, H, W)``.
- :func:`to_nchw` and :func:`to_batch_last`: ``(C, S, N) -> (N, C, S)``
  with a per-channel bias added, and back with per-channel sums (a bias
  gradient: rows of ``N`` summed in the input's dtype, added in float64).

Each is a copy (or a sum) NumPy runs as several strided passes. Measured on
LeNet-5's layers at batch 64 (float32): the first's im2col 0.34 -> 0.21 ms;
the second's im2col 0.23 -> 0.20 ms, col2im 0.57 -> 0.20 ms, output copy
with the bias 0.16 -> 0.03 ms, ``G``'s transpose with the bias gradient
0.06 -> 0.04 ms. The layers' functions (:mod:`plugins.im2col`,
:mod:`plugins.conv_batch_last`) call these only where
:func:`framework.runtime.jit.enabled` says so and :func:`fits` holds; other
dtypes and layouts run their NumPy code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime import jit
from framework.runtime.jit import compiled

__all__ = ["fits", "im2col", "im2col_batch_last", "col2im_batch_last", "to_nchw", "to_batch_last"]

#: values of ``S`` one tile of :func:`to_nchw` writes per row (whole tiles run with a constant bound)
TILE = 16


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    copy = numba.njit(nogil=True, cache=True)
    summing = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})

    @copy
    def planes_im2col(x: Any, steps: Any, out: Any) -> None:
        kh, kw, sh, sw, top, left, dh, dw = steps
        n, c, h, w = x.shape
        oh, ow = out.shape[2], out.shape[3]
        hp, wp = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1  # the part read
        padded = np.zeros((hp, wp), x.dtype)  # its border stays zero, its inside is each plane in turn
        for s in range(n):
            for ch in range(c):
                plane = x[s, ch]
                for r in range(min(h, hp - top)):
                    src, dst = plane[r], padded[r + top, left:]
                    for k in range(min(w, wp - left)):
                        dst[k] = src[k]
                for i in range(kh):
                    for j in range(kw):
                        block = out[s, (ch * kh + i) * kw + j]
                        for a in range(oh):
                            src, dst = padded[a * sh + i * dh, j * dw :], block[a]
                            if sw == 1:
                                for b in range(ow):
                                    dst[b] = src[b]
                            else:
                                for b in range(ow):
                                    dst[b] = src[b * sw]

    @copy
    def runs_im2col(xt: Any, steps: Any, out: Any) -> None:
        kh, kw, sh, sw, top, left, dh, dw = steps
        c, h, w, n = xt.shape
        oh, ow = out.shape[1], out.shape[2] // n
        zero = np.zeros(1, xt.dtype)[0]
        for ch in range(c):
            plane = xt[ch].reshape(-1)
            for i in range(kh):
                for j in range(kw):
                    row = out[(ch * kh + i) * kw + j]
                    offset = j * dw - left  # the columns b in [b0, b1) read inside the image
                    b0 = min(ow, max(0, -(offset // sw)))
                    b1 = min(ow, max(b0, -((offset - w) // sw)))
                    for a in range(oh):
                        r = a * sh + i * dh - top
                        dst = row[a]
                        if r < 0 or r >= h:
                            for k in range(dst.shape[0]):
                                dst[k] = zero
                            continue
                        for k in range(b0 * n):
                            dst[k] = zero
                        tail = dst[b1 * n :]
                        for k in range(tail.shape[0]):
                            tail[k] = zero
                        if sw == 1:
                            run, src = dst[b0 * n : b1 * n], plane[(r * w + b0 + offset) * n :]
                            for k in range(run.shape[0]):
                                run[k] = src[k]
                        else:
                            for b in range(b0, b1):
                                run, src = dst[b * n : (b + 1) * n], plane[(r * w + b * sw + offset) * n :]
                                for k in range(n):
                                    run[k] = src[k]

    @copy
    def runs_col2im(cols: Any, steps: Any, acc: Any) -> None:
        kh, kw, sh, sw, top, left, dh, dw = steps
        c, h, w, n = acc.shape
        oh, ow = cols.shape[1], cols.shape[2] // n
        for ch in range(c):
            plane = acc[ch].reshape(-1)
            for i in range(kh):
                for j in range(kw):
                    row = cols[(ch * kh + i) * kw + j]
                    offset = j * dw - left  # the columns b in [b0, b1) read inside the image
                    b0 = min(ow, max(0, -(offset // sw)))
                    b1 = min(ow, max(b0, -((offset - w) // sw)))
                    for a in range(oh):
                        r = a * sh + i * dh - top
                        if r < 0 or r >= h:
                            continue
                        if sw == 1:
                            src = row[a, b0 * n : b1 * n]
                            dst = plane[(r * w + b0 + offset) * n :]
                            for k in range(src.shape[0]):
                                dst[k] += src[k]
                        else:
                            for b in range(b0, b1):
                                src = row[a, b * n : (b + 1) * n]
                                dst = plane[(r * w + b * sw + offset) * n :]
                                for k in range(n):
                                    dst[k] += src[k]

    @copy
    def batch_first(src: Any, bias: Any, with_bias: bool, dst: Any) -> None:
        c, s, n = src.shape
        whole = s - s % TILE
        zero = np.zeros(1, dst.dtype)[0]
        for ch in range(c):
            block, b = src[ch], bias[ch] if with_bias else zero
            for s0 in range(0, whole, TILE):
                for i in range(n):
                    row = dst[i, ch, s0 : s0 + TILE]
                    if with_bias:
                        for k in range(TILE):
                            row[k] = block[s0 + k, i] + b
                    else:
                        for k in range(TILE):
                            row[k] = block[s0 + k, i]
            for k in range(whole, s):
                for i in range(n):
                    dst[i, ch, k] = block[k, i] + b if with_bias else block[k, i]

    @copy
    def batch_last(src: Any, dst: Any) -> None:
        n, c, s = src.shape
        for ch in range(c):
            for k in range(s):
                row = dst[ch, k]
                for i in range(n):
                    row[i] = src[i, ch, k]

    @summing
    def batch_last_sums(src: Any, dst: Any, sums: Any) -> None:
        n, c, s = src.shape
        zero = np.zeros(1, src.dtype)[0]
        for ch in range(c):
            total = 0.0
            for k in range(s):
                row = dst[ch, k]
                part = zero  # one row of N in the input's dtype, the rows added in float64
                for i in range(n):
                    v = src[i, ch, k]
                    row[i] = v
                    part += v
                total += part
            sums[ch] = total

    return {
        "planes_im2col": planes_im2col,
        "runs_im2col": runs_im2col,
        "runs_col2im": runs_col2im,
        "batch_first": batch_first,
        "batch_last": batch_last,
        "batch_last_sums": batch_last_sums,
    }


Geometry = tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]


def fits(*arrays: np.ndarray | None) -> bool:
    """Whether these kernels run on these arrays now (``None`` skipped): :func:`framework.runtime.jit.takes`
    them, and none is empty."""
    return all(a is None or a.size > 0 for a in arrays) and jit.takes(*arrays)


def _steps(geometry: Geometry) -> tuple[int, ...]:
    """``(kh, kw, sh, sw, top, left, dh, dw)`` of a canonical geometry."""
    (kh, kw), (sh, sw), ((top, _), (left, _)), (dh, dw) = geometry
    return kh, kw, sh, sw, top, left, dh, dw


def im2col(x: np.ndarray, geometry: Geometry, out_hw: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """The columns ``(N, C*kh*kw, OH*OW)`` of ``x`` ``(N, C, H, W)`` written into ``out``, returned."""
    n, k = out.shape[:2]
    _kernels()["planes_im2col"](x, _steps(geometry), out.reshape(n, k, *out_hw))
    return out


def im2col_batch_last(
    x: np.ndarray, geometry: Geometry, out_hw: tuple[int, int], out: np.ndarray, batch_last: bool = False
) -> np.ndarray:
    """The columns ``(C*kh*kw, OH*OW*N)`` of ``x`` ``(N, C, H, W)`` written into ``out``, returned.

    With ``batch_last``, ``x`` is already ``(C, H, W, N)`` (C-contiguous) and is read as it is.
    """
    family = _kernels()
    if batch_last:
        xt = x
    else:
        n, c, h, w = x.shape
        xt = np.empty((c, h, w, n), x.dtype)
        family["batch_last"](x.reshape(n, c, h * w), xt.reshape(c, h * w, n))
    oh, ow = out_hw
    family["runs_im2col"](xt, _steps(geometry), out.reshape(-1, oh, ow * xt.shape[3]))
    return out


def col2im_batch_last(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    geometry: Geometry,
    out_hw: tuple[int, int],
    batch_last: bool = False,
) -> np.ndarray:
    """The adjoint of :func:`im2col_batch_last`: ``cols`` ``(C*kh*kw, OH*OW*N)`` added back to new NCHW.

    ``input_shape`` is ``(N, C, H, W)``; with ``batch_last`` the result is ``(C, H, W, N)``.
    """
    n, c, h, w = input_shape
    family = _kernels()
    acc = np.zeros((c, h, w, n), cols.dtype)
    oh, ow = out_hw
    family["runs_col2im"](cols.reshape(-1, oh, ow * n), _steps(geometry), acc)
    if batch_last:
        return acc
    dx = np.empty(input_shape, cols.dtype)
    family["batch_first"](acc.reshape(c, h * w, n), np.empty(0, cols.dtype), False, dx.reshape(n, c, h * w))
    return dx


def to_nchw(product: np.ndarray, shape: tuple[int, int, int, int], bias: np.ndarray | None) -> np.ndarray:
    """``product`` ``(O, OH*OW*N)`` as a new ``(N, O, OH, OW)`` array, ``bias`` ``(O,)`` added if given."""
    n, o = shape[:2]
    y = np.empty(shape, product.dtype)
    with_bias = bias is not None
    values = bias if bias is not None else np.empty(0, product.dtype)
    _kernels()["batch_first"](product.reshape(o, -1, n), values, with_bias, y.reshape(n, o, -1))
    return y


def to_batch_last(g: np.ndarray, with_sums: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``g`` ``(N, O, *spatial)`` as a new ``(O, S*N)`` array, and its per-channel sums ``(O,)`` if asked."""
    n, o = g.shape[:2]
    last = np.empty((o, g.size // o), g.dtype)
    src, dst = g.reshape(n, o, -1), last.reshape(o, -1, n)
    if not with_sums:
        _kernels()["batch_last"](src, dst)
        return last, None
    sums = np.empty(o)
    _kernels()["batch_last_sums"](src, dst, sums)
    return last, sums.astype(g.dtype)
