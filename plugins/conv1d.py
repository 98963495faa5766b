"""``Conv1d``: a 1-D convolution run as :class:`~plugins.conv.Conv2d` on inputs of height 1.

Registered by the ``plugins.conv`` entry point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from plugins.conv_base import _ConvNd

__all__ = ["Conv1d"]


class Conv1d(_ConvNd):
    """1-D convolution (cross-correlation) over an ``(N, C, L)`` batch, as ``torch.nn.Conv1d``.

    ``y[n, o, t] = activation(b[o] + sum_{c, i} W[o, c, i] * xpad[n, g*C/G + c, t*s + i*d])``

    with ``g = o // (out_channels / G)`` the group of filter ``o``. Runs as
    :class:`Conv2d` on the input viewed as ``(N, C, 1, L)`` (a free reshape):
    im2col with a ``(1, k)`` kernel and one batched matrix product.

    Args:
        in_channels: ``C``, the number of input channels.
        out_channels: the number of filters (output channels).
        kernel_size: ``k``.
        stride: ``s``; default 1.
        padding: ``p`` zeros on both ends, ``"valid"`` (none) or ``"same"``
            (output length = input length; stride 1 only; for an odd total
            ``d*(k-1)`` the extra zero goes to the end, as in PyTorch). Default 0.
        dilation: ``d``, the spacing between kernel taps; default 1.
        groups: ``G``; both channel counts must be divisible by it;
            ``groups == in_channels`` is depthwise. Default 1.
        bias: whether to learn ``bias``; ``False`` leaves it ``None``. Default True.
        activation: an activation name, class or instance, or ``None``.
        weight_init: initializer for ``weight`` (default ``"kaiming_uniform"``).
        bias_init: initializer for ``bias`` (default ``"zeros"``).
        name: layer name.

    Shape:
        - Input: ``(N, in_channels, L)``; ``L`` may vary between calls.
        - Output: ``(N, out_channels, L_out)`` with
          ``L_out = floor((L + pad_left + pad_right - d*(k - 1) - 1) / s) + 1``.

    Attributes:
        weight: ``Parameter`` of shape ``(out_channels, in_channels / groups, k)``.
        bias: ``Parameter`` of shape ``(out_channels,)`` or ``None``.

    Gradient:
        As :class:`Conv2d` with ``kh = 1``: ``dL/dW = sum_n G[n] @ cols[n]^T``,
        ``dL/db = sum of G over n and t``, ``dL/dx = col2im(W^T @ G)``, each
        product batched over the group axis; ``dL/dx`` skipped (``None``) when
        ``ctx.needs_input_grad`` is ``False``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import Conv1d
        >>> conv = Conv1d(2, 4, kernel_size=3, stride=2, padding=1)
        >>> conv.weight.shape
        (4, 2, 3)
        >>> conv(np.zeros((5, 2, 16), dtype=np.float32)).shape
        (5, 4, 8)
        >>> Conv1d(2, 4, 3, dilation=2, padding="same").output_shape((None, 2, 10))
        (None, 4, 10)
    """

    _ndim = 1
    _axes = "L"

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Any = None,
        weight_init: Any = "kaiming_uniform",
        bias_init: Any = "zeros",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._setup(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            activation,
            weight_init,
            bias_init,
        )

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        (length,) = self._output_sizes(x.shape[2:])
        y = self._forward4d(ctx, x[:, :, None, :], (1, length))
        return y.reshape(y.shape[0], self.out_channels, length)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        n, c, length = grad_out.shape
        dx = self._backward4d(ctx, grad_out.reshape(n, c, 1, length))
        return None if dx is None else dx.reshape(n, self.in_channels, dx.shape[-1])
