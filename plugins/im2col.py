"""im2col and its adjoint col2im: a convolution as one matrix product (NCHW, any float dtype).

- :func:`im2col` gathers every receptive field into a columns matrix of shape
  ``(N, C*kh*kw, OH*OW)``, so a convolution is one (batched) matrix product
  ``W.reshape(out_ch, -1) @ cols -> (N, out_ch, OH*OW)``, already NCHW.
- :func:`col2im` is its adjoint: ``<im2col(x), c> == <x, col2im(c)>``. It
  scatter-adds each column entry back onto the input pixel it was read from,
  looping over the ``kh*kw`` kernel offsets only; :func:`im2col_batch_last`
  and :func:`col2im_batch_last` are the pair for columns laid out batch-last,
  ``(C*kh*kw, OH*OW*N)``: one product for the whole batch.
- ``windows=(OH, OW)`` limits them to the first ``OH x OW`` window positions,
  for a transposed convolution whose output holds more positions than its
  input has pixels.
- :func:`im2col_grid` and :func:`col2im_grid` are the pair for a column
  stride of 1 with the batch folded into the columns (one large product
  instead of one per sample): in the padded channel-major layout
  ``(C, Hp, N, Wp)`` a kernel offset is a shift, so every row of the columns
  ``(C*kh*kw, OH*N*Wp)`` is contiguous runs of that layout (a plain memory
  copy, and for col2im a plain strided add), at the price of ``Wp - OW``
  extra positions per output row, which the caller crops.

The geometry (output sizes, padding forms) is :mod:`plugins.conv_geometry`'s.
Where :func:`framework.runtime.jit.enabled` says so, :func:`im2col`,
:func:`im2col_batch_last` and :func:`col2im_batch_last` run the compiled
kernels of :mod:`plugins.im2col_kernels` on float32 and float64 arrays
(the same result to the bit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from plugins import im2col_kernels
from plugins.conv_geometry import (
    _crop,
    _geometry,
    _output_hw,
    _padded_zeros,
    expand_padding,
    offset_slices,
    pad2d,
    pair,
)

__all__ = [
    "window_view",
    "im2col",
    "col2im",
    "im2col_batch_last",
    "col2im_batch_last",
    "grid_shape",
    "im2col_grid",
    "col2im_grid",
]


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
    if im2col_kernels.fits(x, out):  # compiled: no padded copy, one pass
        return im2col_kernels.im2col(x, (kernel, stride, pads, dilation), (oh, ow), out)
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


def im2col_batch_last(
    x: np.ndarray,
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    out: np.ndarray | None = None,
    batch_last: bool = False,
) -> np.ndarray:
    """Columns ``(C*kh*kw, OH*OW*N)`` of ``x`` (``(N, C, H, W)``), the batch axis last and inside.

    ``cols[(c, i, j), (a, b, n)] = xpad[n, c, a*sh + i*dh, b*sw + j*dw]``: the
    input is copied once into a padded ``(C, Hp, Wp, N)`` layout, where for a
    column stride of 1 each row of the columns is ``OH`` contiguous runs of
    ``OW*N`` values. ``W.reshape(out_ch, -1) @ cols`` is then the convolution
    of the whole batch as one product, shaped ``(out_ch, OH, OW, N)``;
    :func:`col2im_batch_last` is the adjoint. With ``batch_last``, ``x`` is
    given as ``(C, H, W, N)`` (batch-last activations) and read as it is.
    """
    shape4 = (x.shape[3], *x.shape[:3]) if batch_last else x.shape
    kernel, stride, pads, dilation, (oh, ow) = _geometry(shape4, kernel, stride, padding, dilation)
    n, c, h, w = shape4
    shape = (c * kernel[0] * kernel[1], oh * ow * n)
    if batch_last:
        x = np.ascontiguousarray(x)
    if im2col_kernels.fits(x, out) and (out is None or out.shape == shape):
        target = np.empty(shape, dtype=x.dtype) if out is None else out
        geometry = (kernel, stride, pads, dilation)
        return im2col_kernels.im2col_batch_last(x, geometry, (oh, ow), target, batch_last)
    (top, bottom), (left, right) = pads
    padded = (c, h + top + bottom, w + left + right, n)
    xp = np.zeros(padded, dtype=x.dtype) if padded[1:3] != (h, w) else np.empty(padded, dtype=x.dtype)
    xp[:, top : top + h, left : left + w] = x if batch_last else x.transpose(1, 2, 3, 0)
    # the windows of the batch-last buffer seen as NCHW, then ordered (C, kh, kw, OH, OW, N)
    windows = window_view(xp.transpose(3, 0, 1, 2), kernel, stride, dilation, (oh, ow))
    view = windows.transpose(1, 2, 3, 4, 5, 0)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    np.copyto(out.reshape(view.shape), view)
    return out


def col2im_batch_last(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    windows: Any = None,
    batch_last: bool = False,
) -> np.ndarray:
    """:func:`col2im` for columns laid out ``(C*kh*kw, OH*OW*N)``, batch axis last.

    ``cols`` equals ``col2im``'s input transposed from ``(N, K, P)`` to
    ``(K, P, N)``. With the batch innermost, every strided ``+=`` moves whole
    rows of ``OW*N`` (stride 1) or ``N`` contiguous values instead of ``OW``,
    which makes the scatter several times faster for small images. The result
    is ``(N, C, H, W)``; the crop and the transpose back are one copy. With
    ``batch_last`` it stays ``(C, H, W, N)`` (``input_shape`` is still ``(N, C, H, W)``).
    """
    kernel, stride, pads, dilation, (oh, ow) = _geometry(
        input_shape, kernel, stride, padding, dilation, windows
    )
    if im2col_kernels.fits(cols):  # compiled: each channel added in cache, one pass
        geometry = (kernel, stride, pads, dilation)
        return im2col_kernels.col2im_batch_last(cols, input_shape, geometry, (oh, ow), batch_last)
    n, c, h, w = input_shape
    blocks = cols.reshape(c, kernel[0], kernel[1], oh, ow, n)
    xp = np.zeros((c, h + sum(pads[0]), w + sum(pads[1]), n), dtype=cols.dtype)
    for i, j, window in offset_slices(kernel, stride, (oh, ow), dilation):
        xp[:, window[0], window[1]] += blocks[:, i, j]
    (top, _), (left, _) = pads
    inside = xp[:, top : top + h, left : left + w]
    return np.ascontiguousarray(inside if batch_last else inside.transpose(3, 0, 1, 2))


def grid_shape(
    input_shape: tuple[int, ...], kernel: Any, stride: Any, padding: Any, dilation: Any = 1
) -> tuple[int, int, int, int, int]:
    """``(Hp, Wp, OH, OW, slack)`` of the row-grid layout of :func:`im2col_grid`.

    ``Hp, Wp`` are the padded sizes, ``OH, OW`` the valid output size (the
    column stride must be 1) and ``slack = dw * (kw - 1)`` the elements the
    last row reads past the padded input (kept zero).
    """
    kernel, stride, pads, dilation, (oh, ow) = _geometry(input_shape, kernel, stride, padding, dilation)
    if stride[1] != 1:
        raise ValueError(f"im2col_grid: the column stride must be 1, got stride={stride}")
    hp, wp = input_shape[2] + sum(pads[0]), input_shape[3] + sum(pads[1])
    return hp, wp, oh, ow, dilation[1] * (kernel[1] - 1)


def im2col_grid(
    x: np.ndarray,
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    out: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """Columns ``(C*kh*kw, OH*N*Wp)`` of ``x`` (``(N, C, H, W)``) for a column stride of 1, batch inside.

    ``cols[(c, i, j), (a, n, b)] = xpad[n, c, a*sh + i*dh, b + j*dw]`` for every
    ``b < Wp``, not only the ``OW`` valid ones: the input is copied once into
    the padded channel-major layout ``(C, Hp, N, Wp)`` (``work``, optional,
    ``C*Hp*N*Wp + slack`` elements), where a kernel offset is a shift, so each
    row of the columns is ``OH`` contiguous runs of ``N*Wp`` values (one run
    when ``sh = 1``): a plain memory copy. The columns ``b >= OW`` hold values
    of no window (finite: read from the next row); the caller crops what its
    product makes of them.
    """
    kernel, stride, pads, dilation = pair(kernel), pair(stride), expand_padding(padding), pair(dilation)
    hp, wp, oh, _, slack = grid_shape(x.shape, kernel, stride, pads, dilation)
    n, c, h, w = x.shape
    (top, _), (left, _) = pads
    size = c * hp * n * wp
    if work is None:
        work = np.empty(size + slack, dtype=x.dtype)
    xp = work[:size].reshape(c, hp, n, wp)
    if hp > h or wp > w:
        xp.fill(0)
    work[size:] = 0
    xp[:, top : top + h, :, left : left + w] = x.transpose(1, 2, 0, 3)
    row = n * wp
    shape = (c, kernel[0], kernel[1], oh, row)
    steps = (hp * row, dilation[0] * row, dilation[1], stride[0] * row, 1)
    view = as_strided(work, shape=shape, strides=tuple(s * work.itemsize for s in steps), writeable=False)
    if out is None:
        out = np.empty((c * kernel[0] * kernel[1], oh * row), dtype=x.dtype)
    np.copyto(out.reshape(shape), view)
    return out


def col2im_grid(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """The adjoint of :func:`im2col_grid`: ``(C*kh*kw, OH*N*Wp)`` columns added back to ``(N, C, H, W)``.

    The columns ``b >= OW`` must hold zeros (they come from a gradient that
    is zero there). Each kernel offset is one strided ``+=`` of whole
    ``N*Wp`` runs into the padded channel-major buffer (``work``, optional);
    the crop and the transpose back to NCHW are one copy into a new array.
    """
    kernel, stride, pads, dilation = pair(kernel), pair(stride), expand_padding(padding), pair(dilation)
    hp, wp, oh, _, slack = grid_shape(input_shape, kernel, stride, pads, dilation)
    n, c, h, w = input_shape
    (top, _), (left, _) = pads
    row = n * wp
    if work is None:
        work = np.empty(c * hp * row + slack, dtype=cols.dtype)
    work.fill(0)
    blocks = cols.reshape(c, kernel[0], kernel[1], oh, row)
    item = work.itemsize
    strides = (hp * row * item, stride[0] * row * item, item)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            start = i * dilation[0] * row + j * dilation[1]
            target = as_strided(work[start:], shape=(c, oh, row), strides=strides)
            target += blocks[:, i, j]
    xp = work[: c * hp * row].reshape(c, hp, n, wp)
    dx = np.empty(input_shape, dtype=cols.dtype)
    np.copyto(dx, xp[:, top : top + h, :, left : left + w].transpose(2, 0, 1, 3))
    return dx
