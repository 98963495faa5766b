"""Built-in plugin: convolution layers ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d`` (PyTorch layouts).

All three lower to the same two pure functions of :mod:`plugins.conv_ops`:
``im2col`` (gather receptive fields into columns) and its adjoint ``col2im``.
A convolution is ``im2col`` then one batched matrix product; its input
gradient is a matrix product then ``col2im``. A transposed convolution is the
same pair run the other way round. Groups are a leading ``(G, ...)`` axis of
one batched product, never a Python loop. ``Conv1d`` is ``Conv2d`` on inputs of
height 1.

This module is the plugin's entry point: it holds :class:`Conv2d` and
registers all three; :class:`~plugins.conv1d.Conv1d` and
:class:`~plugins.conv_transpose.ConvTranspose2d` live in their own modules
(importable from here too), the shared machinery in :mod:`plugins.conv_base`.
Every layer keeps what its backward needs on the call's context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.traits import declares
from framework.errors import NotBuiltError
from framework.registry.hookspecs import hookimpl
from plugins.batch_last import ANY_LAYOUT
from plugins.conv1d import Conv1d
from plugins.conv_base import PADDING_MODES, _ConvNd
from plugins.conv_batch_last import backward_batch_last, forward_batch_last
from plugins.conv_transpose import ConvTranspose2d

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "PADDING_MODES"]


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) over an ``(N, C, H, W)`` batch, as ``torch.nn.Conv2d``.

    ``y[n, o, a, b] = activation(b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, g*C/G + c, u, v])``
    with ``u = a*sh + i*dh`` and ``v = b*sw + j*dw``,

    where ``g = o // (out_channels / G)`` is the group of filter ``o`` and ``c``
    runs over the ``C/G`` channels of that group (all channels when ``groups=1``).

    Computed as one matrix product: the receptive fields are gathered into
    columns ``cols = im2col(x)`` of shape ``(N, C*kh*kw, OH*OW)`` and
    ``y = W.reshape(out_channels, -1) @ cols`` (a batched ``np.matmul``), which
    comes out already in NCHW order. With groups the rows of ``cols`` split
    into ``G`` contiguous blocks and the product is batched over a group axis:
    ``(G, out/G, C/G*kh*kw) @ (N, G, C/G*kh*kw, OH*OW)``. With the compiled
    kernels (the ``[jit]`` extra), a stride-1 convolution of one group runs
    without columns instead (:mod:`plugins.conv_direct`, the direct lowering).

    Args:
        in_channels: ``C``, the number of input channels.
        out_channels: the number of filters (output channels).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default 1.
        padding: zero padding; ``p`` or ``(ph, pw)`` on both sides of each axis,
            ``"valid"`` (none, the same as 0) or ``"same"`` (output size = input
            size; stride 1 only; for an odd total ``d*(k-1)`` the extra row/column
            goes to the bottom/right, as in PyTorch). Default 0.
        activation: an activation name, class or instance applied to the output,
            or ``None``.
        bias: whether to learn ``bias``; ``False`` leaves it ``None``. Default True.
        weight_init: initializer for ``weight`` (default ``"kaiming_uniform"``,
            given the activation's gain; fans count the receptive field).
        bias_init: initializer for ``bias`` (default ``"zeros"``).
        dilation: ``d`` or ``(dh, dw)``, the spacing between kernel taps; default 1.
        groups: ``G``, split the channels into ``G`` independent groups; both
            ``in_channels`` and ``out_channels`` must be divisible by it.
            ``groups == in_channels`` is a depthwise convolution. Default 1.
        name: layer name.

    Shape:
        - Input: ``(N, in_channels, H, W)``; ``H`` and ``W`` may vary between calls.
        - Output: ``(N, out_channels, OH, OW)`` with
          ``OH = floor((H + pad_top + pad_bottom - dh*(kh - 1) - 1) / sh) + 1`` and
          ``OW = floor((W + pad_left + pad_right - dw*(kw - 1) - 1) / sw) + 1``
          (``floor((H + 2p - k) / s) + 1`` for symmetric padding ``p`` and no dilation).

    Attributes:
        weight: ``Parameter`` of shape ``(out_channels, in_channels / groups, kh, kw)``,
            created in the constructor.
        bias: ``Parameter`` of shape ``(out_channels,)`` or ``None``.

    Gradient:
        With ``G = dL/dy`` (after the activation's backward) reshaped to
        ``(N, out_channels, OH*OW)`` and ``Wm = W.reshape(out_channels, -1)``:
        ``dL/dW = sum_n G[n] @ cols[n]^T`` (the sum over all output positions of
        gradient times patch), ``dL/db = G summed over n and positions``, and
        ``dL/dx = col2im(Wm^T @ G)``: each patch gradient is scatter-added back
        onto the pixels it was read from (the adjoint of im2col, dilation
        included), and the padding is cropped off. With groups each product is
        taken per group, batched over the group axis. With
        ``ctx.needs_input_grad = False`` (the first layer during ``fit``) the column
        gradient and col2im are skipped and ``backward`` returns ``None``.

    Memory:
        Each call keeps its columns for backward on its context, in a buffer
        taken from the calling thread's pool (:mod:`plugins.workspace`) and
        given back by the backward, which overwrites it with the column
        gradients: each forward supports one backward, a layer called twice
        before its backwards holds two buffers, and threads never share one.

    Example:
        >>> import numpy as np
        >>> from framework.layers import Conv2d
        >>> conv = Conv2d(3, 8, kernel_size=3, stride=2, padding=1, activation="relu")
        >>> conv.weight.shape
        (8, 3, 3, 3)
        >>> conv(np.zeros((2, 3, 28, 28), dtype=np.float32)).shape
        (2, 8, 14, 14)
        >>> conv.output_shape((None, 3, 32, 20))
        (None, 8, 16, 10)
        >>> Conv2d(4, 8, 3, groups=4, dilation=2).output_shape((None, 4, 9, 9))
        (None, 8, 5, 5)
    """

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        activation: Any = None,
        bias: bool = True,
        weight_init: Any = "kaiming_uniform",
        bias_init: Any = "zeros",
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
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
        return self._forward4d(ctx, x, self._output_sizes(x.shape[2:]))

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        return self._backward4d(ctx, grad_out)

    # -- batch-last activations inside a model (framework.models.layouts) --

    def batch_last_modes(self) -> frozenset[tuple[bool, bool]]:
        """Any layout in and out, for one group and no activation or an element-wise one.

        A first layer's few rows of columns (LeNet-5's: 25) take part too: its
        weight gradient runs over blocks of columns
        (:func:`~plugins.conv_batch_last.weight_gradient_t`). With that layer
        in its run LeNet-5's step took 11 % less than in the public layout,
        with it left outside 8 % (the example CNN: 16 % and 9 %).
        """
        act = self.activation
        if self.groups != 1 or (act is not None and not declares(act, "channelwise")):
            return frozenset()
        return ANY_LAYOUT

    def forward_batch_last(self, ctx: Context, x: np.ndarray, in_last: bool, out_last: bool) -> np.ndarray:
        """``forward`` on ``(C, H, W, N)`` with ``in_last``, giving ``(O, OH, OW, N)`` with ``out_last``."""
        return forward_batch_last(self, ctx, x, in_last, out_last)

    def backward_batch_last(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        """The backward of :meth:`forward_batch_last`: ``grad_out``, ``dL/dx`` as its output, its input."""
        cols = ctx.__dict__.get("cols")
        if cols is None:
            raise NotBuiltError(f"{self.describe()}: backward() needs a forward() first")
        ctx.cols = None
        g = self.activation_backward(ctx, self.activation, grad_out)
        return backward_batch_last(self, ctx, g, cols)


@hookimpl
def register_layers(register: Any) -> None:
    register(Conv1d)
    register(Conv2d)
    register(ConvTranspose2d, aliases=("Conv2DTranspose",))
