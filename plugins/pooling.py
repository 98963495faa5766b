"""Built-in plugin: pooling layers (PyTorch semantics): ``MaxPool1d``, ``AvgPool1d``,
``MaxPool2d``, ``AvgPool2d`` and ``GlobalAvgPool2d``.

The pools run the 2-D functions of :mod:`plugins.pool_ops` (the 1-D ones on
inputs of height 1). ``ceil_mode`` is extra padding at the bottom/right
(``-inf`` for max, zeros outside the divisor for average), so the same
strided-slice loops serve.

This module is the plugin's entry point: it holds the 2-D pools and
registers all five; the 1-D pools live in :mod:`plugins.pooling1d`, the
global pool in :mod:`plugins.global_pooling` (both importable from here),
the shared machinery in :mod:`plugins.pool_base`.
"""

from __future__ import annotations

from typing import Any

from framework.registry.hookspecs import hookimpl
from plugins.global_pooling import GlobalAvgPool2d
from plugins.pool_base import _AvgPool, _MaxPool
from plugins.pooling1d import AvgPool1d, MaxPool1d

__all__ = ["MaxPool1d", "AvgPool1d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


class MaxPool2d(_MaxPool):
    """2-D max pooling, as ``torch.nn.MaxPool2d``: the maximum of each window.

    ``y[n, c, a, b] = max_{i < kh, j < kw} xpad[n, c, a*sh + i, b*sw + j]``,
    where ``xpad`` is ``x`` padded with ``-inf`` (padding never wins).

    Computed as ``np.maximum`` over the ``kh`` strided row slices of the
    padded input, then over the ``kw`` column slices of that. In training mode
    the offset of each window's first maximum is then found by comparing each
    of the ``kh*kw`` slices with the output (no running argmax); in inference
    mode only if ``backward`` asks for it. With the ``[jit]`` extra, 2x2 windows
    at stride 2 without padding run compiled kernels instead
    (:mod:`plugins.pool_kernels`: one pass each way, the same results).

    Args:
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``None`` means ``kernel_size``
            (non-overlapping windows).
        padding: ``p`` or ``(ph, pw)`` of ``-inf`` on both sides of each axis,
            at most half the kernel size. Default 0.
        ceil_mode: round the number of windows up instead of down, so a last
            partial window at the bottom/right is kept (it must start inside
            the input or the left padding, PyTorch's rule). Default False.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)`` with ``OH = floor((H + 2*ph - kh) / sh) + 1``
          and ``OW = floor((W + 2*pw - kw) / sw) + 1``; with ``ceil_mode`` the
          ceiling, less one where that last window would start at or past
          ``H + ph`` (``W + pw``).

    Attributes:
        None (no parameters). Each call keeps on its context the offset of
        each window's first maximum (``(N, C, OH, OW)``, one small integer
        each) in training mode, and references to its input and output in
        inference mode (neither may then be changed in place before
        ``backward``); nothing when ``ctx.record`` is ``False``.

    Gradient:
        Each output's gradient goes to the single input its maximum came from:
        ``dL/dx[n, c, a*sh + i*, b*sw + j*] += dL/dy[n, c, a, b]`` with ``(i*, j*)``
        the first maximal offset of the window in row-major order (ties go to
        the first, so exactly one input receives it). With overlapping windows
        (stride < kernel) an input collects the gradients of every window it
        wins. Gradients landing on padding are dropped.

    Example:
        >>> import numpy as np
        >>> from framework.layers import MaxPool2d
        >>> pool = MaxPool2d(2)
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> pool(x)
        array([[[[ 5.,  7.],
                 [13., 15.]]]], dtype=float32)
        >>> pool.output_shape((None, 3, 7, 9))
        (None, 3, 3, 4)
        >>> MaxPool2d(2, ceil_mode=True).output_shape((None, 3, 7, 9))
        (None, 3, 4, 5)
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, name=name)


class AvgPool2d(_AvgPool):
    """2-D average pooling, as ``torch.nn.AvgPool2d``.

    ``y[n, c, a, b] = (1 / D[a, b]) * sum_{i < kh, j < kw} xpad[n, c, a*sh + i, b*sw + j]``,
    where ``xpad`` is ``x`` zero-padded and the divisor ``D`` is ``kh*kw``
    (padding counted) unless ``count_include_pad=False`` (only the window's
    input pixels counted) or a ``ceil_mode`` window overhangs the padding (the
    overhang is never counted).

    Args:
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``None`` means ``kernel_size``.
        padding: ``p`` or ``(ph, pw)`` zeros on both sides of each axis, at
            most half the kernel size. Default 0.
        ceil_mode: keep a last partial window, as :class:`MaxPool2d`. Default False.
        count_include_pad: whether padded zeros count in the divisor. Default True.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)`` with ``OH = floor((H + 2*ph - kh) / sh) + 1``
          and ``OW = floor((W + 2*pw - kw) / sw) + 1`` (ceiling in ``ceil_mode``,
          as :class:`MaxPool2d`).

    Attributes:
        None (no parameters); backward needs only the input's shape.

    Gradient:
        Every input of a window receives an equal share:
        ``dL/dx[n, c, a*sh + i, b*sw + j] += dL/dy[n, c, a, b] / D[a, b]`` for all
        offsets ``(i, j)``, accumulated over overlapping windows; shares landing
        on padding are dropped.

    Example:
        >>> import numpy as np
        >>> from framework.layers import AvgPool2d
        >>> pool = AvgPool2d(2)
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> pool(x)
        array([[[[ 2.5,  4.5],
                 [10.5, 12.5]]]], dtype=float32)
        >>> AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(np.ones((1, 1, 3, 3)))[0, 0, 0]
        array([1., 1., 1.])
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, name=name)


@hookimpl
def register_layers(register: Any) -> None:
    register(MaxPool1d, aliases=("MaxPooling1D",))
    register(AvgPool1d, aliases=("AveragePooling1D", "AvgPooling1D"))
    register(MaxPool2d, aliases=("MaxPooling2D",))
    register(AvgPool2d, aliases=("AveragePooling2D", "AvgPooling2D"))
    register(GlobalAvgPool2d, aliases=("GlobalAveragePooling2D",))
