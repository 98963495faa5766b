"""The row-grid lowering of a convolution: the whole batch as one product over a padded grid.

``W (O, C*kh*kw) @ cols (C*kh*kw, OH*N*Wp)`` with the columns of
:func:`~plugins.im2col.im2col_grid`: the input copied once into a padded
channel-major ``(C, Hp, N, Wp)`` layout, where every kernel offset is a
shift, so each row of the columns is contiguous runs of ``N*Wp`` values
(derivation in [the Conv2d maths](../maths/conv2d.md)). The product comes out
as ``(O, OH, N, Wp)``; its valid ``OW`` columns are copied to NCHW with the
bias added. The backward lays ``G`` out the same way (zero in the ``Wp - OW``
extra columns), and both gradients are one product each, the input's added
back by :func:`~plugins.im2col.col2im_grid`.
:meth:`plugins.conv_base._ConvNd._use_grid` says when this lowering runs.
With the ``[jit]`` extra the batch-last lowering
(:mod:`plugins.conv_batch_last`) takes these shapes instead
(``plugins.conv_base.BATCH_LAST_COMPILED``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from plugins import workspace
from plugins.conv_batch_last import column_gradients
from plugins.conv_ops import channel_sums, col2im_grid, grid_shape, im2col_grid


def forward_grid(layer: Any, ctx: Context, x: np.ndarray) -> np.ndarray:
    """The convolution of a 4-D ``x`` by ``layer`` (groups 1, column stride 1), columns kept on ``ctx``.

    Returns:
        ``(N, O, OH, OW)``, after the layer's fused activation.
    """
    geometry = layer._geometry2d
    n, c = x.shape[:2]
    o = layer.out_channels
    _, wp, oh, ow, _ = grid_shape(x.shape, *geometry)
    kernel, stride, pads, dilation = geometry
    cols = workspace.take((c * kernel[0] * kernel[1], oh * n * wp), x.dtype)
    im2col_grid(x, kernel, stride, pads, dilation, out=cols)
    wm = layer.weight.data.reshape(o, -1)
    # temporaries (not pooled): glibc reuses them for the next arrays, pooled they would add to the peak
    product = np.empty((o, oh, n, wp), dtype=np.result_type(wm, cols))
    np.matmul(wm, cols, out=product.reshape(o, -1))
    if ctx.record:
        ctx.cols, ctx.grid, ctx.x_shape = cols, True, x.shape
    else:  # no backward follows: the columns are spent
        workspace.give_back(cols)
    valid = product[:, :, :, :ow].transpose(2, 0, 1, 3)
    y = np.empty((n, o, oh, ow), dtype=product.dtype)
    if layer.bias is not None:
        np.add(valid, layer.bias.data.reshape(1, -1, 1, 1), out=y)
    else:
        np.copyto(y, valid)
    return layer.activation_forward(ctx, layer.activation, y)


def backward_grid(layer: Any, ctx: Context, g: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """Parameter gradients added; ``dL/dx`` (NCHW) returned, or ``None`` when the input needs none.

    ``dW^T = cols @ G^T`` and the column gradient ``W^T @ G`` (into the
    columns' buffer) are each one product; :func:`col2im_grid` adds it back.
    """
    n, o, oh, ow = g.shape
    wp = cols.shape[1] // (oh * n)
    if layer.bias is not None:
        layer.bias.add_grad(channel_sums(g))
    grid = np.empty((o, oh, n, wp), dtype=g.dtype)
    grid[:, :, :, ow:] = 0
    grid[:, :, :, :ow] = g.transpose(1, 2, 0, 3)
    dcols = column_gradients(layer, ctx, cols, grid.reshape(o, -1))
    if dcols is None:
        return None
    del grid  # not held while col2im runs (peak memory)
    dx = col2im_grid(dcols, ctx.x_shape, *layer._geometry2d)
    workspace.give_back(cols)
    return dx
