"""``ConvTranspose2d``: the adjoint of a 2-D convolution, as a matrix product then ``col2im``.

Registered by the ``plugins.conv`` entry point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import format_shape
from framework.base.validation import int_tuple
from framework.errors import ConfigError, ShapeError
from framework.registry.namespace import serialize
from framework.runtime.dtype import accumulation_dtype
from plugins.conv_base import _ConvBase
from plugins.conv_geometry import check_groups, compact
from plugins.conv_ops import channel_sums, col2im_batch_last, im2col, per_channel

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution over ``(N, C, H, W)``, as ``torch.nn.ConvTranspose2d``.

    The adjoint of :class:`Conv2d` with the same hyperparameters: every input
    pixel scatters a copy of the kernel, scaled by its value, onto the output::

        ypad[n, g*Co/G + o, a*sh + i*dh, b*sw + j*dw] += W[c, o, i, j] * x[n, c, a, b]

    for each input channel ``c`` of group ``g``, then ``y = crop(ypad) + b``
    (``padding`` rows/columns removed from each side, ``output_padding`` extra
    ones kept at the bottom/right).

    Computed as one matrix product then ``col2im``: with ``x`` laid out
    batch-last as ``(C, H*W*N)``, ``cols = W.reshape(C, -1)^T @ x`` holds every
    scaled kernel copy and ``col2im`` adds them in place; with groups the product
    is batched over a group axis.

    Args:
        in_channels: ``C``, the number of input channels.
        out_channels: the number of output channels.
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``, the upsampling factor; default 1.
        padding: ``p`` or ``(ph, pw)``: ``dilation*(kernel_size-1) - padding``
            zeros are implicitly added around the input, i.e. ``p`` rows/columns
            are cropped from each side of the output. Default 0.
        output_padding: ``op`` or a pair: extra rows/columns at the bottom/right
            of the output (it tells apart the input sizes a strided Conv2d maps
            to one size); each must be smaller than the stride or the dilation.
            Default 0.
        groups: ``G``; both channel counts must be divisible by it. Default 1.
        bias: whether to learn ``bias``; ``False`` leaves it ``None``. Default True.
        dilation: ``d`` or ``(dh, dw)``, the spacing between kernel taps; default 1.
        activation: an activation name, class or instance, or ``None``.
        weight_init: initializer for ``weight`` (default ``"kaiming_uniform"``;
            PyTorch's fan-in of this layout is ``out_channels/G * kh * kw``).
        bias_init: initializer for ``bias`` (default ``"zeros"``).
        name: layer name.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, OH, OW)`` with
          ``OH = (H - 1)*sh - 2*ph + dh*(kh - 1) + oph + 1`` and
          ``OW = (W - 1)*sw - 2*pw + dw*(kw - 1) + opw + 1``.

    Attributes:
        weight: ``Parameter`` of shape ``(in_channels, out_channels / groups, kh, kw)``
            (PyTorch's layout: the Conv2d from the output back to the input).
        bias: ``Parameter`` of shape ``(out_channels,)`` or ``None``.

    Gradient:
        With ``G = dL/dy`` (after the activation's backward), ``gcols = im2col(G)``
        of shape ``(N, out_channels*kh*kw, H*W)`` (a Conv2d forward's columns,
        one window per input pixel): ``dL/dx = W.reshape(C, -1) @ gcols``,
        ``dL/dW = sum_n x[n].reshape(C, H*W) @ gcols[n]^T``,
        ``dL/db = G summed over n, rows and columns``; each product batched
        over the group axis when ``groups > 1``. With ``ctx.needs_input_grad`` ``False``
        the ``dL/dx`` product is skipped and ``backward`` returns ``None``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import ConvTranspose2d
        >>> up = ConvTranspose2d(8, 4, kernel_size=3, stride=2, padding=1, output_padding=1)
        >>> up.weight.shape
        (8, 4, 3, 3)
        >>> up(np.zeros((2, 8, 7, 7), dtype=np.float32)).shape
        (2, 4, 14, 14)
        >>> up.output_shape((None, 8, 5, 3))
        (None, 4, 10, 6)
    """

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        activation: Any = None,
        weight_init: Any = "kaiming_uniform",
        bias_init: Any = "zeros",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        kind = type(self).__name__
        self.in_channels = int_tuple(kind, "in_channels", in_channels, 1)[0]
        self.out_channels = int_tuple(kind, "out_channels", out_channels, 1)[0]
        self.kernel_size = int_tuple(kind, "kernel_size", kernel_size, 2)
        self.stride = int_tuple(kind, "stride", stride, 2)
        self.padding = int_tuple(kind, "padding", padding, 2, minimum=0)
        self.output_padding = int_tuple(kind, "output_padding", output_padding, 2, minimum=0)
        self.dilation = int_tuple(kind, "dilation", dilation, 2)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ConfigError(
                f"{kind}: output_padding must be smaller than either stride or dilation (as in PyTorch), "
                f"got output_padding={self.output_padding}, stride={self.stride}, dilation={self.dilation}"
            )
        self.groups = check_groups(kind, self.in_channels, self.out_channels, groups)
        weight_shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        self._init_weights(weight_shape, bias, activation, weight_init, bias_init)

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The cropping as ``((top, bottom), (left, right))``: the padding of the adjoint Conv2d."""
        ph, pw = self.padding
        return (ph, ph), (pw, pw)

    def _output_sizes(self, sizes: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(size - 1)*s - 2p + d*(k - 1) + op + 1`` per axis."""
        out = tuple(
            None
            if size is None
            else (size - 1) * self.stride[a]
            - 2 * self.padding[a]
            + self.dilation[a] * (self.kernel_size[a] - 1)
            + self.output_padding[a]
            + 1
            for a, size in enumerate(sizes)
        )
        if any(s is not None and s <= 0 for s in out):
            raise ShapeError(
                f"{self.describe()}: padding {self.padding} crops more than the transposed "
                f"convolution of input {format_shape(tuple(sizes))} produces (output would be "
                f"{format_shape(out)}); use a smaller padding or a larger input"
            )
        return out

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        oh, ow = self._output_sizes((h, w))
        groups = self.groups
        # Batch-last input (G, C/G, H*W*N): col2im then adds long contiguous rows.
        x_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(groups, c // groups, h * w * n)
        wg = self.weight.data.reshape(groups, c // groups, -1)
        cols = np.matmul(wg.transpose(0, 2, 1), x_last)
        y = col2im_batch_last(
            cols.reshape(groups * cols.shape[1], cols.shape[2]),  # explicit sizes: N may be 0
            (n, self.out_channels, oh, ow),
            self.kernel_size,
            self.stride,
            self.pads,
            self.dilation,
            windows=(h, w),
        )
        if self.bias is not None:
            per_channel(np.add, y, self.bias.data, out=y)
        ctx.x = x
        return self.activation_forward(ctx, self.activation, y)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        x = ctx.x
        g = self.activation_backward(ctx, self.activation, grad_out)
        n, c, h, w = x.shape
        groups = self.groups
        gcols = im2col(g, self.kernel_size, self.stride, self.pads, self.dilation, windows=(h, w))
        gcols = gcols.reshape(n, groups, gcols.shape[1] // groups, h * w)  # N may be 0
        wg = self.weight.data.reshape(groups, c // groups, -1)
        xg = x.reshape(n, groups, c // groups, h * w)
        dw = np.matmul(xg, gcols.transpose(0, 1, 3, 2))
        acc = accumulation_dtype(g.dtype)  # float16: the sum over the batch in float32
        dw = dw.sum(axis=0) if acc is None else dw.sum(axis=0, dtype=acc)
        self.weight.add_grad(dw.reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.add_grad(channel_sums(g))
        if not ctx.needs_input_grad:  # the first layer in fit: nothing upstream to feed
            return None
        return np.matmul(wg, gcols).reshape(x.shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": compact(self.kernel_size),
            "stride": compact(self.stride),
            "padding": compact(self.padding),
            "output_padding": compact(self.output_padding),
            "groups": self.groups,
            "bias": self.use_bias,
            "dilation": compact(self.dilation),
            "activation": serialize("activations", self.activation),
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={compact(self.kernel_size)}"
        for arg, value, default in (
            ("stride", self.stride, 1),
            ("padding", self.padding, 0),
            ("output_padding", self.output_padding, 0),
            ("dilation", self.dilation, 1),
        ):
            if set(value) != {default}:
                text += f", {arg}={compact(value)}"
        return text + self._extra_repr_tail()
