"""``MaxPool1d`` and ``AvgPool1d``: the 2-D pools run on ``(N, C, L)`` inputs viewed as ``(N, C, 1, L)``.

Registered by the ``plugins.pooling`` entry point.
"""

from __future__ import annotations

from plugins.pool_base import _AvgPool, _MaxPool

__all__ = ["MaxPool1d", "AvgPool1d"]


class MaxPool1d(_MaxPool):
    """1-D max pooling over ``(N, C, L)``, as ``torch.nn.MaxPool1d``.

    ``y[n, c, t] = max_{i < k} xpad[n, c, t*s + i]`` with ``xpad`` padded by ``-inf``.
    Runs as :class:`MaxPool2d` on the input viewed as ``(N, C, 1, L)``.

    Args:
        kernel_size: ``k``.
        stride: ``s``; default ``None`` means ``kernel_size``.
        padding: ``p`` of ``-inf`` on both ends, at most ``k / 2``. Default 0.
        ceil_mode: keep a last partial window (it must start inside the input
            or the left padding). Default False.
        name: layer name.

    Shape:
        - Input: ``(N, C, L)``.
        - Output: ``(N, C, L_out)`` with ``L_out = floor((L + 2p - k) / s) + 1``
          (with ``ceil_mode`` the ceiling, less one if that window would start
          at or past ``L + p``).

    Attributes:
        None (no parameters); each call keeps on its context the first-maximum
        offsets (training) or its input and output (inference) for backward.

    Gradient:
        ``dL/dx[n, c, t*s + i*] += dL/dy[n, c, t]``, ``i*`` the window's first
        maximal offset; gradients on padding are dropped.

    Example:
        >>> import numpy as np
        >>> from framework.layers import MaxPool1d
        >>> MaxPool1d(2)(np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]]))
        array([[[3., 2.]]])
        >>> MaxPool1d(2, ceil_mode=True)(np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]]))
        array([[[3., 2., 5.]]])
    """

    _ndim = 1
    _axes = "L"

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, name=name)


class AvgPool1d(_AvgPool):
    """1-D average pooling over ``(N, C, L)``, as ``torch.nn.AvgPool1d``.

    ``y[n, c, t] = (1 / D[t]) * sum_{i < k} xpad[n, c, t*s + i]`` with ``xpad``
    zero-padded; ``D[t] = k`` unless ``count_include_pad=False`` (input elements
    only) or a ``ceil_mode`` window overhangs the padding (not counted).

    Args:
        kernel_size: ``k``.
        stride: ``s``; default ``None`` means ``kernel_size``.
        padding: ``p`` zeros on both ends, at most ``k / 2``. Default 0.
        ceil_mode: keep a last partial window. Default False.
        count_include_pad: whether padded zeros count in the divisor. Default True.
        name: layer name.

    Shape:
        - Input: ``(N, C, L)``.
        - Output: ``(N, C, L_out)`` with ``L_out = floor((L + 2p - k) / s) + 1``
          (ceiling in ``ceil_mode``, as :class:`MaxPool1d`).

    Attributes:
        None (no parameters).

    Gradient:
        ``dL/dx[n, c, t*s + i] += dL/dy[n, c, t] / D[t]`` for every offset ``i``;
        shares on padding are dropped.

    Example:
        >>> import numpy as np
        >>> from framework.layers import AvgPool1d
        >>> AvgPool1d(2)(np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]]))
        array([[[2., 1.]]])
        >>> AvgPool1d(2, ceil_mode=True)(np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]]))
        array([[[2., 1., 5.]]])
    """

    _ndim = 1
    _axes = "L"

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, name=name)
