"""Pure functions behind the convolution and pooling layers (NCHW, any float dtype).

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

Padding may be an int (all sides), a pair ``(ph, pw)`` (both sides of each
axis) or a pair of pairs ``((top, bottom), (left, right))``; the last form
expresses the asymmetric padding of ``padding="same"`` with an even kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from framework.errors import ShapeError

__all__ = [
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
    "col2im_batch_last",
    "max_pool2d",
    "max_pool2d_argmax",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pool_output_size",
    "avg_pool_divisor",
]

Pair = tuple[int, int]
Padding2d = tuple[Pair, Pair]


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
        return a.sum(axis=(0, *range(2, a.ndim)))
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


def pair(value: Any) -> Pair:
    """``3 -> (3, 3)``; a pair (tuple or list) is returned as a tuple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def expand_padding(padding: Any) -> Padding2d:
    """Normalise ``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))`` to the last form.

    >>> expand_padding(1)
    ((1, 1), (1, 1))
    >>> expand_padding((1, 2))
    ((1, 1), (2, 2))
    """
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        return pair(padding[0]), pair(padding[1])
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def same_padding(kernel: Any, dilation: Any = 1) -> Padding2d:
    """Padding that keeps ``H, W`` at stride 1; an odd total puts the extra pixel bottom/right.

    This is PyTorch's rule for ``padding="same"``: total ``d * (k - 1)``,
    ``before = total // 2``, ``after = total - before``.

    >>> same_padding((4, 3))
    ((1, 2), (1, 1))
    """
    pads = []
    for k, d in zip(pair(kernel), pair(dilation)):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads[0], pads[1]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: Any = 0, dilation: int = 1) -> int:
    """Number of window positions along one axis: ``floor((size + pads - d(k-1) - 1) / s) + 1``.

    ``padding`` is an int (both sides) or a ``(before, after)`` pair. The result
    is ``<= 0`` when the (dilated) kernel is larger than the padded input; the
    caller decides how to report that.

    >>> conv_output_size(28, 5)
    24
    >>> conv_output_size(28, 3, stride=2, padding=1)
    14
    """
    before, after = pair(padding)
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def pad2d(x: np.ndarray, padding: Any, value: float = 0.0) -> np.ndarray:
    """``x`` with its last two axes padded by ``value``; ``x`` itself when there is no padding."""
    (top, bottom), (left, right) = expand_padding(padding)
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    xp[:, :, top : top + h, left : left + w] = x
    return xp


def offset_slices(
    kernel: Any, stride: Any, out_size: Pair, dilation: Any = 1
) -> list[tuple[int, int, tuple[slice, slice]]]:
    """For each kernel offset ``(i, j)``, the strided slice of the padded input it reads.

    The slice ``(i*dh : ... : sh, j*dw : ... : sw)`` selects, for every output
    position ``(a, b)``, the input pixel ``(a*sh + i*dh, b*sw + j*dw)``.
    """
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(stride), pair(dilation)
    oh, ow = out_size
    return [
        (i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)))
        for i in range(kh)
        for j in range(kw)
    ]


def _output_hw(
    shape: tuple[int, ...],
    kernel: Pair,
    stride: Pair,
    pads: Padding2d,
    dilation: Pair,
    windows: Any = None,
) -> Pair:
    h, w = shape[-2:]
    oh = conv_output_size(h, kernel[0], stride[0], pads[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], pads[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"kernel {kernel} (dilation {dilation}) is larger than the padded input "
            f"{(h + sum(pads[0]), w + sum(pads[1]))}"
        )
    if windows is None:
        return oh, ow
    wh, ww = pair(windows)
    if not (0 < wh <= oh and 0 < ww <= ow):
        raise ShapeError(f"windows {(wh, ww)} must be positive and at most the {(oh, ow)} that fit")
    return wh, ww


def _geometry(
    shape: tuple[int, ...], kernel: Any, stride: Any, padding: Any, dilation: Any = 1, windows: Any = None
) -> tuple[Pair, Pair, Padding2d, Pair, Pair]:
    """The arguments of im2col, col2im and the pools in canonical form, and the output size.

    Returns ``(kernel, stride, pads, dilation, (OH, OW))`` with ``pads`` as
    ``((top, bottom), (left, right))``; ShapeError when the kernel does not fit.
    """
    kernel, stride, dilation = pair(kernel), pair(stride), pair(dilation)
    pads = expand_padding(padding)
    return kernel, stride, pads, dilation, _output_hw(shape, kernel, stride, pads, dilation, windows)


def _padded_zeros(input_shape: tuple[int, int, int, int], pads: Padding2d, dtype: np.dtype) -> np.ndarray:
    """Zeros of ``input_shape`` padded by ``pads``: the buffer a scatter-add writes into before the crop."""
    n, c, h, w = input_shape
    return np.zeros((n, c, h + sum(pads[0]), w + sum(pads[1])), dtype=dtype)


def _crop(xp: np.ndarray, pads: Padding2d) -> np.ndarray:
    """Remove ``pads`` from the last two axes (a contiguous copy; ``xp`` itself if unpadded)."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, top : xp.shape[2] - bottom, left : xp.shape[3] - right])


def window_view(
    xp: np.ndarray, kernel: Any, stride: Any = 1, dilation: Any = 1, windows: Any = None
) -> np.ndarray:
    """Read-only strided view ``(N, C, kh, kw, OH, OW)`` of the windows of a padded ``xp``.

    ``view[n, c, i, j, a, b] == xp[n, c, a*sh + i*dh, b*sw + j*dw]``; no data is copied.
    ``windows=(OH, OW)`` keeps only the first window positions along each axis.
    """
    kernel, stride, dilation = pair(kernel), pair(stride), pair(dilation)
    oh, ow = _output_hw(xp.shape, kernel, stride, ((0, 0), (0, 0)), dilation, windows)
    n, c, _, _ = xp.shape
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(
        xp,
        shape=(n, c, kernel[0], kernel[1], oh, ow),
        strides=(s_n, s_c, dilation[0] * s_h, dilation[1] * s_w, stride[0] * s_h, stride[1] * s_w),
        writeable=False,
    )


def im2col(
    x: np.ndarray,
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    out: np.ndarray | None = None,
    windows: Any = None,
) -> np.ndarray:
    """Gather the receptive fields of ``x`` into columns of shape ``(N, C*kh*kw, OH*OW)``.

    ``cols[n, (c, i, j), (a, b)] = xpad[n, c, a*sh + i*dh, b*sw + j*dw]`` with the
    middle axis ordered like ``W.reshape(out_ch, -1)``, so
    ``W.reshape(out_ch, -1) @ cols`` is the convolution, shaped ``(N, out_ch, OH*OW)``.
    The padding is applied once, the windows are a strided view, and the only
    copy is the one into ``cols``.

    Args:
        x: input ``(N, C, H, W)``.
        kernel, stride, dilation: int or pair.
        padding: int, pair, or ``((top, bottom), (left, right))``.
        out: optional C-contiguous buffer of the result's shape and ``x``'s dtype
            to write into (a workspace reused across calls).
        windows: optional ``(OH, OW)``: gather only the first window positions
            (at most as many as fit).

    Raises:
        ShapeError: when the kernel is larger than the padded input.
    """
    kernel, stride, pads, dilation, (oh, ow) = _geometry(x.shape, kernel, stride, padding, dilation, windows)
    n, c = x.shape[:2]
    shape = (n, c * kernel[0] * kernel[1], oh * ow)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    elif out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"im2col: out must be a C-contiguous array of shape {shape}, got {out.shape}")
    view = window_view(pad2d(x, pads), kernel, stride, dilation, (oh, ow))
    np.copyto(out.reshape(view.shape), view)
    return out


def col2im(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    windows: Any = None,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add columns back to an ``(N, C, H, W)`` array.

    Each entry of ``cols`` is added to the input pixel :func:`im2col` read it
    from, so pixels shared by overlapping windows receive the sum; entries that
    came from padding are dropped. One strided ``+=`` per kernel offset.

    Args:
        cols: ``(N, C*kh*kw, OH*OW)`` (or anything of that size).
        input_shape: ``(N, C, H, W)`` of the unpadded input.
        kernel, stride, padding, dilation, windows: as given to :func:`im2col`.
    """
    kernel, stride, pads, dilation, (oh, ow) = _geometry(
        input_shape, kernel, stride, padding, dilation, windows
    )
    n, c = input_shape[:2]
    blocks = cols.reshape(n, c, kernel[0], kernel[1], oh, ow)
    xp = _padded_zeros(input_shape, pads, cols.dtype)
    for i, j, window in offset_slices(kernel, stride, (oh, ow), dilation):
        xp[:, :, window[0], window[1]] += blocks[:, :, i, j]
    return _crop(xp, pads)


def col2im_batch_last(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    windows: Any = None,
) -> np.ndarray:
    """:func:`col2im` for columns laid out ``(C*kh*kw, OH*OW*N)``, batch axis last.

    ``cols`` equals ``col2im``'s input transposed from ``(N, K, P)`` to
    ``(K, P, N)``. With the batch innermost, every strided ``+=`` moves whole
    rows of ``OW*N`` (stride 1) or ``N`` contiguous values instead of ``OW``,
    which makes the scatter several times faster for small images. The result
    is ``(N, C, H, W)``; the crop and the transpose back are one copy.
    """
    kernel, stride, pads, dilation, (oh, ow) = _geometry(
        input_shape, kernel, stride, padding, dilation, windows
    )
    n, c, h, w = input_shape
    blocks = cols.reshape(c, kernel[0], kernel[1], oh, ow, n)
    xp = np.zeros((c, h + sum(pads[0]), w + sum(pads[1]), n), dtype=cols.dtype)
    for i, j, window in offset_slices(kernel, stride, (oh, ow), dilation):
        xp[:, window[0], window[1]] += blocks[:, i, j]
    (top, _), (left, _) = pads
    return np.ascontiguousarray(xp[:, top : top + h, left : left + w].transpose(3, 0, 1, 2))


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
    matched = np.empty(out.shape, dtype=bool)
    equal = np.empty(out.shape, dtype=bool)
    for k, (_, _, (r, c)) in enumerate(slices[:-1]):
        np.equal(xp[:, :, r, c], out, out=equal if k else matched)
        if k:
            matched |= equal
        np.add(argmax, np.logical_not(matched, out=equal), out=argmax)
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
    ``kh + kw - 2`` additions instead of ``kh*kw - 1``.
    """
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
    where windows do not overlap along that axis.
    """
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
