"""Batch-last activations ``(C, H, W, N)``: the copies at the edges of a run of such layers.

Inside a model, consecutive Conv2d, BatchNorm, activation and MaxPool2d
layers pass their activations batch-last
(:mod:`framework.models.layouts`): a convolution's product is already laid out
so, and its input gradient is accumulated so. The layer that opens a run takes
``(N, C, H, W)`` and the layer that closes it gives ``(N, C, H, W)`` back, with
these two copies (compiled where :func:`plugins.im2col_kernels.fits`).
"""

from __future__ import annotations

import numpy as np

from plugins import im2col_kernels

__all__ = ["ANY_LAYOUT", "BATCH_LAST_IN", "to_channels_first", "to_batch_last"]

#: ``batch_last_modes()`` values: ``(input batch-last, output batch-last)`` pairs a layer serves
ANY_LAYOUT = frozenset({(False, True), (True, True), (True, False)})
BATCH_LAST_IN = frozenset({(True, True), (True, False)})


def to_channels_first(a: np.ndarray) -> np.ndarray:
    """``a`` ``(C, H, W, N)`` as a new C-contiguous ``(N, C, H, W)`` array."""
    c, h, w, n = a.shape
    if im2col_kernels.fits(a):
        return im2col_kernels.to_nchw(np.ascontiguousarray(a).reshape(c, -1), (n, c, h, w), None)
    return np.ascontiguousarray(a.transpose(3, 0, 1, 2))


def to_batch_last(a: np.ndarray) -> np.ndarray:
    """``a`` ``(N, C, H, W)`` as a new C-contiguous ``(C, H, W, N)`` array."""
    n, c, h, w = a.shape
    if im2col_kernels.fits(a):
        return im2col_kernels.to_batch_last(np.ascontiguousarray(a), with_sums=False)[0].reshape(c, h, w, n)
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))
