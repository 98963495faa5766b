"""Built-in plugin: convolution layers ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d`` (PyTorch layouts).

All three lower to the same two pure functions of :mod:`plugins.conv_ops`:
``im2col`` (gather receptive fields into columns) and its adjoint ``col2im``.
A convolution is ``im2col`` then one batched matrix product; its input
gradient is a matrix product then ``col2im``. A transposed convolution is the
same pair run the other way round. Groups are a leading ``(G, ...)`` axis of
one batched product, never a Python loop. ``Conv1d`` is ``Conv2d`` on inputs of
height 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework import activations, initializers
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, int_tuple
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.registry.namespace import serialize
from framework.runtime.dtype import get_default_dtype
from plugins.conv_ops import (
    channel_sums,
    col2im_batch_last,
    conv_output_size,
    im2col,
    per_channel,
    same_padding,
)

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "PADDING_MODES"]

#: The string values ``padding`` accepts.
PADDING_MODES = ("valid", "same")


def _compact(values: tuple[int, ...]) -> int | list[int]:
    """``(3, 3) -> 3``, ``(3,) -> 3`` and ``(3, 5) -> [3, 5]``: the JSON form of a size."""
    return values[0] if len(set(values)) == 1 else list(values)


def _check_groups(layer: str, in_channels: int, out_channels: int, groups: Any) -> int:
    """``groups`` as an int dividing both channel counts; ConfigError naming the culprit otherwise."""
    groups = int_tuple(layer, "groups", groups, 1)[0]
    for arg, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ConfigError(
                f"{layer}: {arg}={channels} is not divisible by groups={groups}; "
                "groups must divide both in_channels and out_channels"
            )
    return groups


def _to2d(values: tuple[Any, ...], fill: Any) -> tuple[Any, Any]:
    """A per-axis tuple of a 1-D layer as the 2-D pair of a height-1 image."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


class _ConvBase(Layer):
    """Shared by every convolution: bias, activation and weights, the input check, build and output shape.

    Subclasses validate their geometry, call ``_init_weights`` with the
    weight's shape, and give the output size per spatial axis (``_output_sizes``).
    """

    _ndim = 2
    _axes = "H, W"

    def _init_weights(
        self, weight_shape: tuple[int, ...], bias: Any, activation: Any, weight_init: Any, bias_init: Any
    ) -> None:
        """Check ``bias``, resolve the activation and initializers, create ``weight`` and ``bias``."""
        self.use_bias = check_bool(type(self).__name__, "bias", bias)
        self.activation = activations.get(activation)
        self.weight_init = initializers.get(weight_init)
        self.bias_init = initializers.get(bias_init)
        dtype = get_default_dtype()
        gain = getattr(self.activation, "gain", None)
        self.weight = Parameter(self.weight_init(weight_shape, dtype=dtype, gain=gain))
        self.bias = Parameter(self.bias_init((self.out_channels,), dtype=dtype)) if self.use_bias else None

    def _check_shape(self, shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) != 2 + self._ndim or shape[1] != self.in_channels:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.in_channels}, {self._axes}), "
                f"got {format_shape(shape)}"
            )

    def _output_sizes(self, sizes: tuple[int | None, ...]) -> tuple[int | None, ...]:
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        self._output_sizes(input_shape[2:])
        super().build(input_shape)
        self.input_spec = (None, self.in_channels, *(None,) * self._ndim)

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return (input_shape[0], self.out_channels, *self._output_sizes(input_shape[2:]))

    def _extra_repr_tail(self) -> str:
        """The ``groups``, ``activation`` and ``bias`` part of ``extra_repr``, where not the default."""
        text = ""
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.activation is not None:
            text += f", activation={serialize('activations', self.activation)!r}"
        if not self.use_bias:
            text += ", bias=False"
        return text


class _ConvNd(_ConvBase):
    """Shared by ``Conv1d`` and ``Conv2d``: validation, weights, the im2col forward and backward.

    Per-axis hyperparameters (``kernel_size``, ``stride``, ``dilation``, a
    numeric ``padding``) are tuples of one entry per spatial axis, as PyTorch
    stores them. The maths always runs on 4-D ``(N, C, H, W)`` arrays; a 1-D
    layer adds and removes a height-1 axis around it.
    """

    def _setup(
        self,
        in_channels: Any,
        out_channels: Any,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: Any,
        bias: Any,
        activation: Any,
        weight_init: Any,
        bias_init: Any,
    ) -> None:
        kind, n = type(self).__name__, self._ndim
        self.in_channels = int_tuple(kind, "in_channels", in_channels, 1)[0]
        self.out_channels = int_tuple(kind, "out_channels", out_channels, 1)[0]
        self.kernel_size = int_tuple(kind, "kernel_size", kernel_size, n)
        self.stride = int_tuple(kind, "stride", stride, n)
        self.dilation = int_tuple(kind, "dilation", dilation, n)
        self.groups = _check_groups(kind, self.in_channels, self.out_channels, groups)
        self.padding = self._check_padding(padding)
        weight_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._init_weights(weight_shape, bias, activation, weight_init, bias_init)
        # The 2-D geometry im2col/col2im run with (a height-1 kernel for Conv1d), fixed from here on.
        self._geometry2d = (
            _to2d(self.kernel_size, 1),
            _to2d(self.stride, 1),
            _to2d(self.pads, (0, 0)),
            _to2d(self.dilation, 1),
        )
        self._workspace: np.ndarray | None = None
        self._cols_valid = False
        self._x_shape: tuple[int, ...] | None = None

    def _check_padding(self, padding: Any) -> str | tuple[int, ...]:
        kind = type(self).__name__
        if isinstance(padding, str):
            if padding not in PADDING_MODES:
                raise ConfigError(
                    f"{kind}: padding must be one of {', '.join(repr(m) for m in PADDING_MODES)}, "
                    f"an int or a pair of ints, got {padding!r}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ConfigError(
                    f"{kind}: padding='same' needs stride 1 (as in PyTorch), got stride={self.stride}; "
                    "give the padding as numbers instead"
                )
            return padding
        try:
            return int_tuple(kind, "padding", padding, self._ndim, minimum=0)
        except ConfigError:
            shape = "a non-negative int" if self._ndim == 1 else "a non-negative int, a pair of them"
            raise ConfigError(
                f"{kind}: padding must be {shape}, "
                f"or one of {', '.join(repr(m) for m in PADDING_MODES)}, got {padding!r}"
            ) from None

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """The padding as ``(before, after)`` per spatial axis, e.g. ``((top, bottom), (left, right))``."""
        if self.padding == "same":
            return same_padding(_to2d(self.kernel_size, 1), _to2d(self.dilation, 1))[2 - self._ndim :]
        if self.padding == "valid":
            return ((0, 0),) * self._ndim
        return tuple((p, p) for p in self.padding)

    def _output_sizes(self, sizes: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Output size per spatial axis: ``floor((size + pads - d*(k - 1) - 1) / s) + 1``."""
        pads = self.pads
        out = tuple(
            None
            if size is None
            else conv_output_size(size, self.kernel_size[a], self.stride[a], pads[a], self.dilation[a])
            for a, size in enumerate(sizes)
        )
        if any(s is not None and s <= 0 for s in out):
            padded = tuple(None if s is None else s + sum(p) for s, p in zip(sizes, pads))
            dilated = "" if set(self.dilation) == {1} else f" (dilation {self.dilation})"
            raise ShapeError(
                f"{self.describe()}: kernel {self.kernel_size}{dilated} is larger than the padded input "
                f"{format_shape(padded)} (input {format_shape(sizes)}, padding {pads})"
            )
        return out

    def _forward4d(self, x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """The convolution of a 4-D ``x`` whose output is ``out_hw``; keeps the columns for backward."""
        n = x.shape[0]
        oh, ow = out_hw
        kernel, stride, pads, dilation = self._geometry2d
        shape = (n, self.in_channels * kernel[0] * kernel[1], oh * ow)
        ws = self._workspace
        if ws is None or ws.shape != shape or ws.dtype != x.dtype:
            ws = self._workspace = np.empty(shape, dtype=x.dtype)
        cols = im2col(x, kernel, stride, pads, dilation, out=ws)
        self._cols_valid = True
        self._x_shape = x.shape
        g = self.groups
        if g == 1:
            y = np.matmul(self.weight.data.reshape(self.out_channels, -1), cols)
        else:  # (G, O/G, K/G) @ (N, G, K/G, P) -> (N, G, O/G, P): one product over the group axis
            wg = self.weight.data.reshape(g, self.out_channels // g, -1)
            y = np.matmul(wg, cols.reshape(n, g, -1, oh * ow)).reshape(n, self.out_channels, -1)
        if self.bias is not None:
            per_channel(np.add, y, self.bias.data, out=y)
        y = y.reshape(n, self.out_channels, oh, ow)
        if self.activation is not None:
            y = self.activation.forward(y)
        return y

    def _backward4d(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self._cols_valid:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first; each forward supports "
                "one backward (the cached columns are reused for the gradient)"
            )
        g = self.activation_backward(self.activation, grad_out)
        n, groups = g.shape[0], self.groups
        cols = self._workspace
        # A leading group axis only when there are groups: groups=1 runs plain 3-D/2-D products.
        lead = () if groups == 1 else (groups,)
        g = g.reshape(n, *lead, self.out_channels // groups, -1)
        colsg = cols.reshape(n, *lead, -1, cols.shape[-1])
        w = self.weight.data.reshape(*lead, self.out_channels // groups, -1)
        # dW^T = sum_n cols[n] @ G[n]^T: with the columns as the left operand OpenBLAS runs up
        # to 3x faster than G[n] @ cols[n]^T, and never slower (measured, 1 and 2 threads).
        dw_t = np.matmul(colsg, np.swapaxes(g, -1, -2)).sum(axis=0)
        self.weight.add_grad(np.swapaxes(dw_t, -1, -2).reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.add_grad(channel_sums(g.reshape(n, self.out_channels, -1)))
        self._cols_valid = False
        if not self.needs_input_grad:  # the first layer in fit: no column gradient, no col2im
            return None
        # The column gradient is computed batch-last, (K, OH*OW*N): transposing G costs one
        # copy of the output, and col2im's strided adds then run over long contiguous rows.
        g_last = np.ascontiguousarray(g.transpose(*range(1, g.ndim), 0)).reshape(*w.shape[:-1], -1)
        wt = np.swapaxes(w, -1, -2)
        # One filter per group (depthwise): the product is an outer product, and a broadcast
        # multiply runs it several times faster than matmul's inner dimension of 1.
        product = np.multiply if groups > 1 and w.shape[1] == 1 else np.matmul
        if np.result_type(w, g_last) == cols.dtype:  # reuse the workspace: cols are no longer needed
            dcols = product(wt, g_last, out=cols.reshape(*wt.shape[:-1], -1))
        else:
            dcols = product(wt, g_last)
        return col2im_batch_last(dcols.reshape(-1, dcols.shape[-1]), self._x_shape, *self._geometry2d)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else _compact(self.padding),
            "dilation": _compact(self.dilation),
            "groups": self.groups,
            "activation": serialize("activations", self.activation),
            "bias": self.use_bias,
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={_compact(self.kernel_size)}"
        if set(self.stride) != {1}:
            text += f", stride={_compact(self.stride)}"
        if self.padding != "valid" and (isinstance(self.padding, str) or set(self.padding) != {0}):
            text += f", padding={self.padding if isinstance(self.padding, str) else _compact(self.padding)!r}"
        if set(self.dilation) != {1}:
            text += f", dilation={_compact(self.dilation)}"
        return text + self._extra_repr_tail()


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
    ``(G, out/G, C/G*kh*kw) @ (N, G, C/G*kh*kw, OH*OW)``.

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
        ``needs_input_grad = False`` (the first layer during ``fit``) the column
        gradient and col2im are skipped and ``backward`` returns ``None``.

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
        >>> Conv2d(4, 8, 3, groups=4, dilation=2).output_shape((None, 4, 9, 9))
        (None, 8, 5, 5)
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward4d(x, self._output_sizes(x.shape[2:]))

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        return self._backward4d(grad_out)


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
        ``needs_input_grad`` is ``False``.

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

    def forward(self, x: np.ndarray) -> np.ndarray:
        (length,) = self._output_sizes(x.shape[2:])
        y = self._forward4d(x[:, :, None, :], (1, length))
        return y.reshape(y.shape[0], self.out_channels, length)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        n, c, length = grad_out.shape
        dx = self._backward4d(grad_out.reshape(n, c, 1, length))
        return None if dx is None else dx.reshape(dx.shape[0], self.in_channels, -1)


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
        over the group axis when ``groups > 1``. With ``needs_input_grad = False``
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
        self.groups = _check_groups(kind, self.in_channels, self.out_channels, groups)
        weight_shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        self._init_weights(weight_shape, bias, activation, weight_init, bias_init)
        self._x: np.ndarray | None = None

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

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        oh, ow = self._output_sizes((h, w))
        groups = self.groups
        # Batch-last input (G, C/G, H*W*N): col2im then adds long contiguous rows.
        x_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(groups, c // groups, -1)
        wg = self.weight.data.reshape(groups, c // groups, -1)
        cols = np.matmul(wg.transpose(0, 2, 1), x_last)
        y = col2im_batch_last(
            cols.reshape(-1, cols.shape[-1]),
            (n, self.out_channels, oh, ow),
            self.kernel_size,
            self.stride,
            self.pads,
            self.dilation,
            windows=(h, w),
        )
        if self.bias is not None:
            per_channel(np.add, y, self.bias.data, out=y)
        self._x = x
        if self.activation is not None:
            y = self.activation.forward(y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x = self._x
        if x is None:
            raise NotBuiltError(f"{self.describe()}: backward() needs a forward() first")
        g = self.activation_backward(self.activation, grad_out)
        n, c, h, w = x.shape
        groups = self.groups
        gcols = im2col(g, self.kernel_size, self.stride, self.pads, self.dilation, windows=(h, w))
        gcols = gcols.reshape(n, groups, -1, h * w)
        wg = self.weight.data.reshape(groups, c // groups, -1)
        xg = x.reshape(n, groups, c // groups, h * w)
        dw = np.matmul(xg, gcols.transpose(0, 1, 3, 2)).sum(axis=0)
        self.weight.add_grad(dw.reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.add_grad(channel_sums(g))
        if not self.needs_input_grad:  # the first layer in fit: nothing upstream to feed
            return None
        return np.matmul(wg, gcols).reshape(x.shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _compact(self.padding),
            "output_padding": _compact(self.output_padding),
            "groups": self.groups,
            "bias": self.use_bias,
            "dilation": _compact(self.dilation),
            "activation": serialize("activations", self.activation),
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={_compact(self.kernel_size)}"
        for arg, value, default in (
            ("stride", self.stride, 1),
            ("padding", self.padding, 0),
            ("output_padding", self.output_padding, 0),
            ("dilation", self.dilation, 1),
        ):
            if set(value) != {default}:
                text += f", {arg}={_compact(value)}"
        return text + self._extra_repr_tail()


@hookimpl
def register_layers(register: Any) -> None:
    register(Conv1d)
    register(Conv2d)
    register(ConvTranspose2d, aliases=("Conv2DTranspose",))
