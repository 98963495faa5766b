"""Built-in plugin: the 2-D convolution layer ``Conv2d`` (PyTorch layouts, NCHW)."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework import activations, initializers
from framework.dtype import get_default_dtype
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.hookspecs import hookimpl
from framework.layer import Layer, format_shape
from framework.namespace import serialize
from framework.parameter import Parameter
from plugins.conv_ops import Padding2d, col2im_batch_last, conv_output_size, im2col, same_padding

__all__ = ["Conv2d", "PADDING_MODES"]

#: The string values ``padding`` accepts.
PADDING_MODES = ("valid", "same")


def _positive_pair(layer: str, arg: str, value: Any) -> tuple[int, int]:
    """An int or pair of ints, each > 0, as a pair; ConfigError naming ``arg`` otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in items
    ):
        raise ConfigError(f"{layer}: {arg} must be a positive integer or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def _compact(pair: tuple[int, int]) -> int | list[int]:
    """``(3, 3) -> 3`` and ``(3, 5) -> [3, 5]``: the JSON form of a pair."""
    return pair[0] if pair[0] == pair[1] else list(pair)


class Conv2d(Layer):
    """2-D convolution (cross-correlation) over an ``(N, C, H, W)`` batch, as ``torch.nn.Conv2d``.

    ``y[n, o, a, b] = activation(b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, a*sh + i, b*sw + j])``

    Computed as one matrix product: the receptive fields are gathered into
    columns ``cols = im2col(x)`` of shape ``(N, C*kh*kw, OH*OW)`` and
    ``y = W.reshape(out_channels, -1) @ cols`` (a batched ``np.matmul``), which
    comes out already in NCHW order.

    Args:
        in_channels: ``C``, the number of input channels.
        out_channels: the number of filters (output channels).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default 1.
        padding: zero padding; ``p`` or ``(ph, pw)`` on both sides of each axis,
            ``"valid"`` (none, the same as 0) or ``"same"`` (output size = input
            size; stride 1 only; for an even kernel the extra row/column goes to
            the bottom/right, as in PyTorch). Default 0.
        activation: an activation name, class or instance applied to the output,
            or ``None``.
        bias: whether to learn ``bias``; ``False`` leaves it ``None``. Default True.
        weight_init: initializer for ``weight`` (default ``"kaiming_uniform"``,
            given the activation's gain; fans count the receptive field).
        bias_init: initializer for ``bias`` (default ``"zeros"``).
        name: layer name.

    Shape:
        - Input: ``(N, in_channels, H, W)``; ``H`` and ``W`` may vary between calls.
        - Output: ``(N, out_channels, OH, OW)`` with
          ``OH = floor((H + pad_top + pad_bottom - kh) / sh) + 1`` and
          ``OW = floor((W + pad_left + pad_right - kw) / sw) + 1``
          (``floor((H + 2p - k) / s) + 1`` for symmetric padding ``p``).

    Attributes:
        weight: ``Parameter`` of shape ``(out_channels, in_channels, kh, kw)``,
            created in the constructor.
        bias: ``Parameter`` of shape ``(out_channels,)`` or ``None``.

    Gradient:
        With ``G = dL/dy`` (after the activation's backward) reshaped to
        ``(N, out_channels, OH*OW)`` and ``Wm = W.reshape(out_channels, -1)``:
        ``dL/dW = sum_n G[n] @ cols[n]^T`` (the sum over all output positions of
        gradient times patch), ``dL/db = G summed over n and positions``, and
        ``dL/dx = col2im(Wm^T @ G)``: each patch gradient is scatter-added back
        onto the pixels it was read from (the adjoint of im2col), and the
        padding is cropped off.

    Memory:
        The columns of the last forward are kept for backward in a workspace
        that later forwards of the same shape reuse; backward overwrites it with
        the column gradients, so each forward supports one backward.

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
    """

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
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        kind = type(self).__name__
        self.in_channels = _positive_pair(kind, "in_channels", in_channels)[0]
        self.out_channels = _positive_pair(kind, "out_channels", out_channels)[0]
        self.kernel_size = _positive_pair(kind, "kernel_size", kernel_size)
        self.stride = _positive_pair(kind, "stride", stride)
        # Dilation and groups are fixed at 1 for now; im2col already takes a dilation
        # and grouping is a (groups, out/groups, k/groups) reshape of the weight.
        self.dilation = (1, 1)
        self.padding = self._check_padding(padding)
        if not isinstance(bias, (bool, np.bool_)):
            raise ConfigError(f"{kind}: bias must be True or False, got {bias!r}")
        self.use_bias = bool(bias)
        self.activation = activations.get(activation)
        self.weight_init = initializers.get(weight_init)
        self.bias_init = initializers.get(bias_init)

        dtype = get_default_dtype()
        gain = getattr(self.activation, "gain", None)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.weight = Parameter(self.weight_init(shape, dtype=dtype, gain=gain))
        self.bias = Parameter(self.bias_init((self.out_channels,), dtype=dtype)) if self.use_bias else None
        self._workspace: np.ndarray | None = None
        self._cols_valid = False
        self._x_shape: tuple[int, ...] | None = None

    def _check_padding(self, padding: Any) -> str | tuple[int, int]:
        kind = type(self).__name__
        if isinstance(padding, str):
            if padding not in PADDING_MODES:
                raise ConfigError(
                    f"{kind}: padding must be one of {', '.join(repr(m) for m in PADDING_MODES)}, "
                    f"an int or a pair of ints, got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ConfigError(
                    f"{kind}: padding='same' needs stride 1 (as in PyTorch), got stride={self.stride}; "
                    "give the padding as numbers instead"
                )
            return padding
        items = tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)
        if len(items) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in items
        ):
            raise ConfigError(
                f"{kind}: padding must be a non-negative int, a pair of them, "
                f"or one of {', '.join(repr(m) for m in PADDING_MODES)}, got {padding!r}"
            )
        return int(items[0]), int(items[1])

    @property
    def pads(self) -> Padding2d:
        """The padding as ``((top, bottom), (left, right))``."""
        if self.padding == "same":
            return same_padding(self.kernel_size, self.dilation)
        if self.padding == "valid":
            return (0, 0), (0, 0)
        ph, pw = self.padding
        return (ph, ph), (pw, pw)

    def _check_shape(self, shape: Any) -> None:
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.in_channels}, H, W), "
                f"got {format_shape(shape)}"
            )

    def _output_hw(self, h: int | None, w: int | None) -> tuple[int | None, int | None]:
        pads = self.pads
        sizes = []
        for axis, size in enumerate((h, w)):
            if size is None:
                sizes.append(None)
                continue
            sizes.append(
                conv_output_size(
                    size, self.kernel_size[axis], self.stride[axis], pads[axis], self.dilation[axis]
                )
            )
        if any(s is not None and s <= 0 for s in sizes):
            padded = tuple(None if s is None else s + sum(p) for s, p in zip((h, w), pads))
            raise ShapeError(
                f"{self.describe()}: kernel {self.kernel_size} is larger than the padded input "
                f"{format_shape(padded)} (input {format_shape((h, w))}, padding {pads})"
            )
        return sizes[0], sizes[1]

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, tuple):
            raise ShapeError(
                f"{self.describe()} expected one input of shape (N, {self.in_channels}, H, W), "
                f"got {format_shape(input_shape)}"
            )
        self._check_shape(input_shape)
        self._output_hw(input_shape[2], input_shape[3])
        super().build(input_shape)
        self.input_spec = (None, self.in_channels, None, None)

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = x.shape
        oh, ow = self._output_hw(h, w)
        shape = (n, self.in_channels * self.kernel_size[0] * self.kernel_size[1], oh * ow)
        ws = self._workspace
        if ws is None or ws.shape != shape or ws.dtype != x.dtype:
            ws = self._workspace = np.empty(shape, dtype=x.dtype)
        cols = im2col(x, self.kernel_size, self.stride, self.pads, self.dilation, out=ws)
        self._cols_valid = True
        self._x_shape = x.shape
        y = np.matmul(self.weight.data.reshape(self.out_channels, -1), cols)
        if self.bias is not None:
            y += self.bias.data[:, None]
        y = y.reshape(n, self.out_channels, oh, ow)
        if self.activation is not None:
            y = self.activation.forward(y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if not self._cols_valid:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first; each forward supports "
                "one backward (the cached columns are reused for the gradient)"
            )
        g = grad_out if self.activation is None else self.activation.backward(grad_out)
        n = g.shape[0]
        g = g.reshape(n, self.out_channels, -1)
        cols = self._workspace
        w = self.weight.data.reshape(self.out_channels, -1)
        self.weight.grad += np.matmul(g, cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=(0, 2))
        self._cols_valid = False
        # The column gradient is computed batch-last, (K, OH*OW*N): transposing G costs one
        # copy of the output, and col2im's strided adds then run over long contiguous rows.
        g_last = np.ascontiguousarray(g.transpose(1, 2, 0)).reshape(self.out_channels, -1)
        if np.result_type(w, g_last) == cols.dtype:  # reuse the workspace: cols are no longer needed
            dcols = np.matmul(w.T, g_last, out=cols.reshape(w.shape[1], -1))
        else:
            dcols = w.T @ g_last
        return col2im_batch_last(
            dcols, self._x_shape, self.kernel_size, self.stride, self.pads, self.dilation
        )

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        oh, ow = self._output_hw(input_shape[2], input_shape[3])
        return (input_shape[0], self.out_channels, oh, ow)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else _compact(self.padding),
            "activation": serialize("activations", self.activation),
            "bias": self.use_bias,
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={_compact(self.kernel_size)}"
        if self.stride != (1, 1):
            text += f", stride={_compact(self.stride)}"
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding if isinstance(self.padding, str) else _compact(self.padding)!r}"
        if self.activation is not None:
            text += f", activation={serialize('activations', self.activation)!r}"
        if not self.use_bias:
            text += ", bias=False"
        return text


@hookimpl
def register_layers(register: Any) -> None:
    register(Conv2d)
