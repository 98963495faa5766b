"""The batch-last lowering of a convolution: the whole batch as one product, no wasted columns.

``W (O, C*kh*kw) @ cols (C*kh*kw, OH*OW*N)`` with the columns of
:func:`~plugins.im2col.im2col_batch_last`, whose rows are long contiguous
runs of the padded ``(C, Hp, Wp, N)`` input. It serves the shapes the row
grid (:func:`plugins.conv_grid.forward_grid`) refuses (its
``Wp - OW`` extra columns per row would cost too much: small images, large
kernels, no padding, as LeNet-5's second layer; or one BLAS thread) when the
output is small (``OH*OW <= 128``), where it beats one product per sample at
one and two threads (measured: LeNet-5's second layer at batch 64, 2.51 ->
2.09 ms forward + backward at 2 threads, 2.78 -> 2.55 ms at one).
The output ``(O, OH, OW, N)`` is copied to NCHW with the bias added in the
same pass; the backward transposes ``G`` once to ``(O, OH*OW*N)``, and both
gradients are one product each, the input's scattered back by
:func:`~plugins.im2col.col2im_batch_last`. Where
:func:`framework.runtime.jit.enabled` says so, the copies are compiled
(:mod:`plugins.im2col_kernels`): the output copy with the bias (LeNet-5's
second layer at batch 64: 0.16 -> 0.03 ms) and ``G``'s transpose with the
bias gradient in the same pass (0.06 -> 0.04 ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.runtime import blas
from plugins import im2col_kernels, workspace
from plugins.conv_geometry import _geometry
from plugins.im2col import col2im_batch_last, im2col_batch_last


def forward_batch_last(
    layer: Any, ctx: Context, x: np.ndarray, in_last: bool = False, out_last: bool = False
) -> np.ndarray:
    """The convolution of a 4-D ``x`` by ``layer`` (groups 1), its columns kept on ``ctx`` for the backward.

    ``x`` is ``(N, C, H, W)``, or ``(C, H, W, N)`` with ``in_last``.

    Returns:
        ``(N, O, OH, OW)``, or ``(O, OH, OW, N)`` with ``out_last``, after the layer's fused activation.
    """
    geometry = layer._geometry2d
    shape4 = (x.shape[3], *x.shape[:3]) if in_last else x.shape
    kernel, _, _, _, (oh, ow) = _geometry(shape4, *geometry)
    n, c = shape4[:2]
    o = layer.out_channels
    buffer = workspace.take((c * kernel[0] * kernel[1], oh * ow * n), x.dtype)
    cols = im2col_batch_last(x, *geometry, out=buffer, batch_last=in_last)
    product = layer.weight.data.reshape(o, -1) @ cols
    if ctx.record:
        ctx.cols, ctx.grid, ctx.batch_last, ctx.x_shape = cols, False, True, shape4
        ctx.in_last, ctx.out_last = in_last, out_last
    else:  # no backward follows: the columns are spent
        workspace.give_back(cols)
    bias = None if layer.bias is None else layer.bias.data
    if out_last:  # the product is the output: (O, OH*OW*N), rows of one channel
        if bias is not None:
            np.add(product, bias.reshape(-1, 1).astype(product.dtype, copy=False), out=product)
        return layer.activation_forward(ctx, layer.activation, product.reshape(o, oh, ow, n))
    if im2col_kernels.fits(product, bias):  # compiled: in cache-sized tiles, one pass
        y = im2col_kernels.to_nchw(product, (n, o, oh, ow), bias)
        return layer.activation_forward(ctx, layer.activation, y)
    as_nchw = product.reshape(o, oh, ow, n).transpose(3, 0, 1, 2)
    y = np.empty((n, o, oh, ow), dtype=product.dtype)
    if bias is not None:
        np.add(as_nchw, bias.reshape(1, -1, 1, 1), out=y)
    else:
        np.copyto(y, as_nchw)
    return layer.activation_forward(ctx, layer.activation, y)


def backward_batch_last(layer: Any, ctx: Context, g: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """Parameter gradients added; ``dL/dx`` returned, or ``None`` when the input needs none.

    ``g`` is ``(N, O, OH, OW)``, or ``(O, OH, OW, N)`` when the forward gave its
    output batch-last; ``dL/dx`` is laid out as the forward's input was. With
    ``G`` as ``(O, OH*OW*N)``: ``dW^T = cols @ G^T``, ``db = G 1`` and the
    column gradient ``W^T G`` (written into the spent columns' buffer).
    """
    o = layer.out_channels
    if ctx.__dict__.get("out_last"):  # already (O, OH*OW*N)
        g_last = np.ascontiguousarray(g).reshape(o, -1)
        db = None if layer.bias is None else blas.sum_rows(g_last.T)
    elif im2col_kernels.fits(g):  # compiled: the transpose and the bias gradient, one pass
        g_last, db = im2col_kernels.to_batch_last(g, with_sums=layer.bias is not None)
    else:
        g_last = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).reshape(o, -1)
        db = None if layer.bias is None else blas.sum_rows(g_last.T)
    if layer.bias is not None:
        layer.bias.add_grad(db)
    dcols = column_gradients(layer, ctx, cols, g_last)
    if dcols is None:
        return None
    del g_last  # not held while col2im runs (peak memory)
    in_last = bool(ctx.__dict__.get("in_last"))
    dx = col2im_batch_last(dcols, ctx.x_shape, *layer._geometry2d, batch_last=in_last)
    workspace.give_back(cols)
    return dx


def column_gradients(layer: Any, ctx: Context, cols: np.ndarray, gm: np.ndarray) -> np.ndarray | None:
    """The two products of a one-product lowering's backward, ``G`` laid out like its columns.

    ``dW^T = cols @ G^T`` is added to the weight's gradient. Returns the
    column gradient ``W^T @ G``, written into the spent columns' buffer when
    the dtypes allow, for the caller's col2im; or ``None``, the columns given
    back, when the input needs no gradient (the first layer in ``fit``).
    """
    layer.weight.add_grad(weight_gradient_t(cols, gm).T.reshape(layer.weight.shape))
    if not ctx.needs_input_grad:
        workspace.give_back(cols)
        return None
    wm = layer.weight.data.reshape(gm.shape[0], -1)
    if np.result_type(wm, gm) == cols.dtype:
        return np.matmul(wm.T, gm, out=cols)
    return np.matmul(wm.T, gm)


#: columns per block of :func:`weight_gradient_t`, for fewer than ``SHALLOW`` rows of columns
BLOCK = 1024
SHALLOW = 64


def weight_gradient_t(cols: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """``dW^T = cols @ G^T``, ``(K, O)``, from ``cols`` ``(K, P)`` and ``G`` ``(O, P)``.

    ``cols @ G^T``: OpenBLAS runs it up to 1.4x faster than ``G @ cols^T`` (1
    and 2 threads). With few rows of columns (``K < SHALLOW``: a first layer) one
    product over the long inner dimension ``P`` is slow (LeNet-5's first
    layer, ``(25, 50176) @ (50176, 6)``: 0.65 ms), so it runs as a batch of
    products over blocks of ``BLOCK`` columns, summed (0.21 ms).
    """
    k, p = cols.shape
    whole = p - p % BLOCK
    if k >= SHALLOW or whole < 2 * BLOCK:
        return np.matmul(cols, gm.T)
    blocks = whole // BLOCK
    parts = np.matmul(
        cols[:, :whole].reshape(k, blocks, BLOCK).transpose(1, 0, 2),
        gm[:, :whole].reshape(-1, blocks, BLOCK).transpose(1, 2, 0),
    )
    total = parts.sum(axis=0)
    if whole < p:
        total += cols[:, whole:] @ gm[:, whole:].T
    return total
