"""Pure functions behind the pooling layers: max and average pools and their adjoints (NCHW).

- :func:`max_pool2d` / :func:`avg_pool2d` reduce over the windows with
  strided slices, separably (the ``kh`` row slices, then the ``kw`` column
  slices of that); :func:`avg_pool2d_backward` is the adjoint;
  :func:`max_pool2d_argmax` finds each window's first maximum from the input
  and the output, and :func:`max_pool2d_backward` routes the gradient there,
  one pass per kernel offset;
- :func:`pool_output_size` and :func:`avg_pool_divisor` give PyTorch's
  ``ceil_mode`` and ``count_include_pad`` rules.

The window geometry and padding forms are :mod:`plugins.conv_geometry`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.runtime.dtype import HALF
from plugins.conv_geometry import Pair, _crop, _geometry, offset_slices, pad2d

__all__ = [
    "max_pool2d",
    "max_pool2d_argmax",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pool_output_size",
    "avg_pool_divisor",
]


def max_pool2d(x: np.ndarray, kernel: Any, stride: Any, padding: Any = 0) -> np.ndarray:
    """Window maxima of ``x``: ``y[n, c, a, b] = max_{i, j} xpad[n, c, a*sh + i, b*sw + j]``.

    Padding is by ``-inf``, so it never wins. The maximum is separable: first
    over the ``kh`` rows of each window (``np.maximum`` of ``kh`` strided row
    slices, each row whole and contiguous), then over the ``kw`` columns of
    that, ``kh + kw - 2`` passes instead of ``kh*kw - 1``. No argmax is
    tracked; :func:`max_pool2d_argmax` finds the winners from ``x`` and ``y``.

    Returns:
        ``y`` of shape ``(N, C, OH, OW)``.
    """
    kernel, stride, pads, _, (oh, ow) = _geometry(x.shape, kernel, stride, padding)
    xp = pad2d(x, pads, value=-np.inf)
    rows, cols = _row_slices(kernel, stride, (oh, ow))
    rowmax = xp[:, :, rows[0]]  # a view when kh == 1 (1-D pools): never written to
    if len(rows) > 1:
        rowmax = np.maximum(rowmax, xp[:, :, rows[1]])
    for r in rows[2:]:
        np.maximum(rowmax, xp[:, :, r], out=rowmax)
    if len(cols) == 1:
        return np.array(rowmax[..., cols[0]], copy=True)
    out = np.maximum(rowmax[..., cols[0]], rowmax[..., cols[1]])
    for c in cols[2:]:
        np.maximum(out, rowmax[..., c], out=out)
    return out


def max_pool2d_argmax(
    x: np.ndarray, out: np.ndarray, kernel: Any, stride: Any, padding: Any = 0
) -> np.ndarray:
    """Per window, the offset ``i*kw + j`` of its first maximum in row-major order.

    ``out`` is :func:`max_pool2d` of ``x``. The offset is counted rather than
    searched: after comparing the first ``k + 1`` offsets with the maximum,
    every window that has not matched yet adds one, so a window adds one per
    offset before its first match (ties go to the first, and exactly one
    input wins each window). The last offset needs no comparison: a window
    unmatched until then has its maximum there (a NaN maximum too).

    Returns:
        ``(N, C, OH, OW)`` of the smallest unsigned integer type holding ``kh*kw - 1``.
    """
    kernel, stride, pads, _, (oh, ow) = _geometry(x.shape, kernel, stride, padding)
    xp = pad2d(x, pads, value=-np.inf)
    slices = offset_slices(kernel, stride, (oh, ow))
    argmax = np.zeros(out.shape, dtype=np.min_scalar_type(len(slices) - 1))
    if len(slices) == 1:
        return argmax
    lowest = out.min() if out.size else 0.0  # one reduction: NaN if a window's maximum is NaN
    if np.isnan(lowest) or (lowest == -np.inf and any(p for side in pads for p in side)):
        return _argmax_exact(x.shape, xp, out, argmax, slices, stride, pads)
    matched = np.empty(out.shape, dtype=bool)
    equal = np.empty(out.shape, dtype=bool)
    for k, (_, _, (r, c)) in enumerate(slices[:-1]):
        np.equal(xp[:, :, r, c], out, out=equal if k else matched)
        if k:
            matched |= equal
        np.add(argmax, np.logical_not(matched, out=equal), out=argmax)
    return argmax


def _argmax_exact(
    shape: tuple[int, ...],
    xp: np.ndarray,
    out: np.ndarray,
    argmax: np.ndarray,
    slices: list[tuple[int, int, tuple[slice, slice]]],
    stride: Pair,
    pads: Any,
) -> np.ndarray:
    """:func:`max_pool2d_argmax` where counting cannot place a window: PyTorch's choice, offset by offset.

    A NaN maximum equals nothing (PyTorch takes the window's last NaN), and
    an all ``-inf`` window would match the ``-inf`` padding first (PyTorch
    takes its first element inside the input). Here only offsets inside the
    input count, and a NaN window takes its last NaN; the others their first
    maximum, as the counting path does.
    """
    (top, _), (left, _) = pads
    h, w = shape[2], shape[3]
    oh, ow = out.shape[2:]
    rows = np.arange(oh) * stride[0] - top
    cols = np.arange(ow) * stride[1] - left
    nan_windows = np.isnan(out)
    found = nan_windows.copy()  # NaN windows are settled by the last NaN, below
    for k, (i, j, (r, c)) in enumerate(slices):
        inside = ((rows + i >= 0) & (rows + i < h))[:, None] & ((cols + j >= 0) & (cols + j < w))[None, :]
        candidate = xp[:, :, r, c]
        first = inside & ~found & (candidate == out)
        argmax[first] = k
        found |= first
        argmax[inside & nan_windows & np.isnan(candidate)] = k
    return argmax


def max_pool2d_backward(
    grad_out: np.ndarray,
    argmax: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any,
    padding: Any = 0,
) -> np.ndarray:
    """Route each output gradient to the input its window's first maximum came from.

    ``dx[n, c, a*sh + i, b*sw + j] += g[n, c, a, b]`` where
    ``argmax[n, c, a, b] == i*kw + j`` (:func:`max_pool2d_argmax`); overlapping
    windows (stride < kernel) accumulate. One pass per kernel offset:
    ``g * (argmax == k)`` written into that offset's strided slice of ``dx``
    (assigned where windows do not overlap; no zeros where they tile).
    """
    kernel, stride, pads, _, (oh, ow) = _geometry(input_shape, kernel, stride, padding)
    n, c, h, w = input_shape
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]
    tiled = kernel == stride and oh * stride[0] == hp and ow * stride[1] == wp
    dxp = (np.empty if tiled else np.zeros)((n, c, hp, wp), dtype=grad_out.dtype)
    first = np.empty(argmax.shape, dtype=bool)
    share = np.empty(grad_out.shape, dtype=grad_out.dtype) if overlapping else None
    for k, (_, _, (rows, cols)) in enumerate(offset_slices(kernel, stride, (oh, ow))):
        np.equal(argmax, k, out=first)
        dst = dxp[:, :, rows, cols]
        if overlapping:
            dst += np.multiply(grad_out, first, out=share)
        else:
            np.multiply(grad_out, first, out=dst)
    return _crop(dxp, pads)


def _row_slices(kernel: Pair, stride: Pair, out_size: Pair) -> tuple[list[slice], list[slice]]:
    """The ``kh`` strided row slices and ``kw`` strided column slices of a separable pool.

    Row slice ``i`` picks rows ``a*sh + i`` for every output row ``a``; column
    slice ``j`` picks columns ``b*sw + j``.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    rows = [slice(i, i + sh * (oh - 1) + 1, sh) for i in range(kh)]
    cols = [slice(j, j + sw * (ow - 1) + 1, sw) for j in range(kw)]
    return rows, cols


def avg_pool2d(x: np.ndarray, kernel: Any, stride: Any, padding: Any = 0, divisor: Any = None) -> np.ndarray:
    """Window sums of the zero-padded ``x`` divided by ``divisor``.

    ``divisor`` defaults to ``kh*kw`` (padding counted); an array broadcasting
    to ``(OH, OW)`` gives each output its own count (:func:`avg_pool_divisor`).
    The sum is separable: over the ``kh`` strided row slices first (whole
    contiguous rows), then over the ``kw`` column slices of that,
    ``kh + kw - 2`` additions instead of ``kh*kw - 1``. float16 sums in float32
    (a float16 running sum of ones stops at 2048), rounded to float16 at the end.
    """
    if x.dtype == HALF:
        return avg_pool2d(x.astype(np.float32), kernel, stride, padding, divisor).astype(HALF)
    kernel, stride, pads, _, (oh, ow) = _geometry(x.shape, kernel, stride, padding)
    xp = pad2d(x, pads)
    rows, cols = _row_slices(kernel, stride, (oh, ow))
    rowsum = xp[:, :, rows[0]]  # a view when kh == 1 (1-D pools): never written to
    if len(rows) > 1:
        rowsum = rowsum + xp[:, :, rows[1]]
    for r in rows[2:]:
        rowsum += xp[:, :, r]
    out = rowsum[..., cols[0]].copy()
    for c in cols[1:]:
        out += rowsum[..., c]
    out *= _reciprocal(divisor, kernel, out.dtype)
    return out


def avg_pool2d_backward(
    grad_out: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any,
    padding: Any = 0,
    divisor: Any = None,
) -> np.ndarray:
    """Scatter-add ``g / divisor`` to every input of each window (padding dropped).

    The adjoint of the separable forward: the shares are spread over the
    ``kw`` columns of each window into a ``(N, C, OH, Wp)`` array, then its
    rows over the ``kh`` rows of each window, assigning instead of adding
    where windows do not overlap along that axis. float16 in float32, as the forward.
    """
    if grad_out.dtype == HALF:
        dx = avg_pool2d_backward(grad_out.astype(np.float32), input_shape, kernel, stride, padding, divisor)
        return dx.astype(HALF)
    kernel, stride, pads, _, (oh, ow) = _geometry(input_shape, kernel, stride, padding)
    share = grad_out * _reciprocal(divisor, kernel, grad_out.dtype)
    n, c, h, w = input_shape
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    rows, cols = _row_slices(kernel, stride, (oh, ow))
    # Where the windows tile an axis every element is assigned once: no zeros needed.
    tiled_w = kernel[1] == stride[1] and ow * stride[1] == wp
    tiled_h = kernel[0] == stride[0] and oh * stride[0] == hp
    spread = (np.empty if tiled_w else np.zeros)((n, c, oh, wp), dtype=share.dtype)
    _scatter(spread, cols, share, overlapping=stride[1] < kernel[1], axis=3)
    dxp = (np.empty if tiled_h else np.zeros)((n, c, hp, wp), dtype=share.dtype)
    _scatter(dxp, rows, spread, overlapping=stride[0] < kernel[0], axis=2)
    return _crop(dxp, pads)


def _scatter(dst: np.ndarray, slices: list[slice], values: np.ndarray, overlapping: bool, axis: int) -> None:
    """``dst[..., s, ...] += values`` along ``axis`` for each slice (``=`` when the slices are disjoint)."""
    index = [slice(None)] * dst.ndim
    for s in slices:
        index[axis] = s
        if overlapping:
            dst[tuple(index)] += values
        else:
            dst[tuple(index)] = values


def _reciprocal(divisor: Any, kernel: Pair, dtype: np.dtype) -> Any:
    if divisor is None:
        return dtype.type(1.0 / (kernel[0] * kernel[1]))
    return (1.0 / np.asarray(divisor, dtype=np.float64)).astype(dtype)


def pool_output_size(size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> int:
    """Number of pooling windows along one axis, PyTorch's rule (``<= 0``: the kernel does not fit).

    ``floor((size + 2p - k) / s) + 1``, or with ``ceil_mode`` the ceiling, less
    one if that last window would start in the right padding (it must start
    inside the input or the left padding).

    >>> pool_output_size(5, 2, 2), pool_output_size(5, 2, 2, ceil_mode=True)
    (2, 3)
    >>> pool_output_size(5, 2, 2, padding=1, ceil_mode=True)  # a 4th window would start at 6 >= 5+1
    3
    """
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def avg_pool_divisor(
    size: int, kernel: int, stride: int, padding: int, out: int, count_include_pad: bool = True
) -> np.ndarray:
    """Per-window divisor along one axis, ``(out,)``; the 2-D divisor is the outer product.

    Window ``a`` spans ``[a*s - p, min(a*s - p + k, size + p))``: the part past
    the right padding (a ``ceil_mode`` window) never counts. With
    ``count_include_pad=False`` only the part inside ``[0, size)`` counts.

    >>> avg_pool_divisor(4, 3, 1, 1, 4, count_include_pad=False)
    array([2, 3, 3, 2])
    """
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)
