"""The machinery every convolution layer shares: validation, weights, shapes, im2col forward and backward.

:class:`_ConvBase` serves :class:`~plugins.conv.Conv2d`,
:class:`~plugins.conv1d.Conv1d` and
:class:`~plugins.conv_transpose.ConvTranspose2d`; :class:`_ConvNd` adds the
forward and backward of a (1-D or 2-D) convolution run as ``im2col`` and one
batched matrix product, with what the backward needs kept on the call's
context (the columns in a buffer of the thread's pool,
:mod:`plugins.workspace`), never on the layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework import activations, initializers
from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, int_tuple
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.registry.namespace import serialize
from framework.runtime import blas, jit
from framework.runtime.dtype import accumulation_dtype, get_default_dtype
from plugins import conv_direct, workspace
from plugins.conv_batch_last import backward_batch_last, forward_batch_last
from plugins.conv_geometry import check_groups, compact, to2d
from plugins.conv_grid import backward_grid, forward_grid
from plugins.conv_ops import (
    channel_sums,
    col2im_batch_last,
    conv_output_size,
    im2col,
    per_channel,
    same_padding,
)

__all__ = ["PADDING_MODES"]

#: The string values ``padding`` accepts.
PADDING_MODES = ("valid", "same")

#: The one-product lowering needs this many rows of columns (``C*kh*kw``) to beat
#: one product per sample (measured at 2 threads: LeNet-5's first layer, 25, loses;
#: the example CNN's second, 144, wins), and computes at most this many times the
#: valid output columns (``Wp / OW``).
GRID_MIN_DEPTH = 64
GRID_MAX_WASTE = 1.25
#: Where the grid is not taken, this many rows of columns or more and at most this many
#: output positions per sample run batch-last (:mod:`plugins.conv_batch_last`, one
#: product); the rest one product per sample. Measured at 1 and 2 threads: with 7x7 to
#: 10x10 outputs batch-last wins by 4-35 %; with 14x14 it ties or loses (up to 1.4x
#: slower at batch 128, one thread: its transposes of the larger arrays dominate).
BATCH_LAST_MIN_DEPTH = 64
BATCH_LAST_MAX_POSITIONS = 128
#: With the compiled kernels (:mod:`framework.runtime.jit`) and two or more BLAS threads,
#: batch-last runs at every output size and instead of the grid: measured forward + backward,
#: 2 threads, 3x3 convolutions of 16 to 64 channels on 7x7 to 28x28, it was 3-20 % faster
#: than the grid (the example CNN's second layer at batch 128: 10.5 -> 9.1 ms).
BATCH_LAST_COMPILED = True


class _ConvBase(Layer):
    """Shared by every convolution: bias, activation and weights, the input check, build and output shape.

    Subclasses validate their geometry, call ``_init_weights`` with the
    weight's shape, and give the output size per spatial axis (``_output_sizes``).
    """

    _ndim = 2
    _axes = "H, W"
    float_input = True  # an integer or boolean input is cast to the default float dtype

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
        self.groups = check_groups(kind, self.in_channels, self.out_channels, groups)
        self.padding = self._check_padding(padding)
        weight_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._init_weights(weight_shape, bias, activation, weight_init, bias_init)
        # The 2-D geometry im2col/col2im run with (a height-1 kernel for Conv1d), fixed from here on.
        self._geometry2d = (
            to2d(self.kernel_size, 1),
            to2d(self.stride, 1),
            to2d(self.pads, (0, 0)),
            to2d(self.dilation, 1),
        )

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
            return same_padding(to2d(self.kernel_size, 1), to2d(self.dilation, 1))[2 - self._ndim :]
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

    def _forward4d(self, ctx: Context, x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """The convolution of a 4-D ``x`` whose output is ``out_hw``; keeps the columns on ``ctx``.

        The columns ``(N, C*kh*kw, OH*OW)`` go into a buffer of this thread's
        pool (:mod:`plugins.workspace`), held by this call until its backward
        (or given back at once when ``ctx.record`` is ``False``).
        """
        n = x.shape[0]
        oh, ow = out_hw
        kernel, stride, pads, dilation = self._geometry2d
        if conv_direct.usable(self, ctx, x):
            return conv_direct.forward_direct(self, ctx, x)
        # with the compiled kernels batch-last's copies are cheap: it beats the grid at any output size
        compiled = BATCH_LAST_COMPILED and jit.takes(x) and blas.num_threads() >= 2
        if not compiled and self._use_grid(x.shape, kernel, stride, pads):
            return self._forward_grid(ctx, x)
        deep = self.in_channels * kernel[0] * kernel[1] >= BATCH_LAST_MIN_DEPTH
        if self.groups == 1 and deep and (compiled or oh * ow <= BATCH_LAST_MAX_POSITIONS):
            return forward_batch_last(self, ctx, x)
        shape = (n, self.in_channels * kernel[0] * kernel[1], oh * ow)
        cols = im2col(x, kernel, stride, pads, dilation, out=workspace.take(shape, x.dtype))
        g = self.groups
        if g == 1:
            y = np.matmul(self.weight.data.reshape(self.out_channels, -1), cols)
        else:  # (G, O/G, K/G) @ (N, G, K/G, P) -> (N, G, O/G, P): one product over the group axis
            wg = self.weight.data.reshape(g, self.out_channels // g, -1)
            y = np.matmul(wg, cols.reshape(n, g, shape[1] // g, oh * ow))  # explicit sizes: N may be 0
            y = y.reshape(n, self.out_channels, oh * ow)
        if ctx.record:
            ctx.cols, ctx.grid, ctx.x_shape = cols, False, x.shape
        else:  # no backward follows: the columns are spent
            workspace.give_back(cols)
        if self.bias is not None:
            per_channel(np.add, y, self.bias.data, out=y)
        y = y.reshape(n, self.out_channels, oh, ow)
        return self.activation_forward(ctx, self.activation, y)

    def _backward4d(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        """Parameter gradients added, ``dL/dx`` of the 4-D input returned (``None`` if not needed)."""
        cols = ctx.__dict__.get("cols")
        if cols is None:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first; each forward supports "
                "one backward (the cached columns are reused for the gradient)"
            )
        ctx.cols = None
        g = self.activation_backward(ctx, self.activation, grad_out)
        if g.shape[0] == 0:  # an empty batch (as PyTorch): zero parameter gradients, an empty dL/dx
            workspace.give_back(cols)
            for p in filter(None, (self.weight, self.bias)):
                p.add_grad(np.zeros_like(p.data))
            dtype = np.result_type(self.weight.data, g)
            return np.zeros(ctx.x_shape, dtype) if ctx.needs_input_grad else None
        if ctx.__dict__.get("direct"):
            return conv_direct.backward_direct(self, ctx, g, cols)
        if ctx.__dict__.get("grid"):
            return self._backward_grid(ctx, g, cols)
        if ctx.__dict__.get("batch_last"):
            return backward_batch_last(self, ctx, g, cols)
        n, groups = g.shape[0], self.groups
        # A leading group axis only when there are groups: groups=1 runs plain 3-D/2-D products.
        lead = () if groups == 1 else (groups,)
        g = g.reshape(n, *lead, self.out_channels // groups, -1)
        colsg = cols.reshape(n, *lead, -1, cols.shape[-1])
        w = self.weight.data.reshape(*lead, self.out_channels // groups, -1)
        # dW^T = sum_n cols[n] @ G[n]^T: with the columns as the left operand OpenBLAS runs up
        # to 3x faster than G[n] @ cols[n]^T, and never slower (measured, 1 and 2 threads).
        dw_t = np.matmul(colsg, np.swapaxes(g, -1, -2))
        acc = accumulation_dtype(g.dtype)  # float16: the sum over the batch in float32
        dw_t = dw_t.sum(axis=0) if acc is None else dw_t.sum(axis=0, dtype=acc)
        self.weight.add_grad(np.swapaxes(dw_t, -1, -2).reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.add_grad(channel_sums(g.reshape(n, self.out_channels, -1)))
        if not ctx.needs_input_grad:  # the first layer in fit: no column gradient, no col2im
            workspace.give_back(cols)
            return None
        # The column gradient is computed batch-last, (K, OH*OW*N): transposing G costs one
        # copy of the output, and col2im's strided adds then run over long contiguous rows.
        g_last = np.ascontiguousarray(g.transpose(*range(1, g.ndim), 0)).reshape(*w.shape[:-1], -1)
        wt = np.swapaxes(w, -1, -2)
        # One filter per group (depthwise): the product is an outer product, and a broadcast
        # multiply runs it several times faster than matmul's inner dimension of 1.
        product = np.multiply if groups > 1 and w.shape[1] == 1 else np.matmul
        if np.result_type(w, g_last) == cols.dtype:  # reuse the buffer: the columns are spent
            dcols = product(wt, g_last, out=cols.reshape(*wt.shape[:-1], -1))
        else:
            dcols = product(wt, g_last)
        dx = col2im_batch_last(dcols.reshape(-1, dcols.shape[-1]), ctx.x_shape, *self._geometry2d)
        workspace.give_back(cols)
        return dx

    def _use_grid(self, x_shape: tuple[int, ...], kernel: Any, stride: Any, pads: Any) -> bool:
        """Whether the one-product lowering (:meth:`_forward_grid`) is the faster one here (measured).

        It needs groups 1 and a column stride of 1, and wins when the products
        dominate (``C*kh*kw >= GRID_MIN_DEPTH``), the grid adds few positions
        (``Wp <= GRID_MAX_WASTE * OW``) and BLAS has two or more threads to run
        one large product on (one per sample does not use them).
        """
        if self.groups != 1 or stride[1] != 1:
            return False
        if self.in_channels * kernel[0] * kernel[1] < GRID_MIN_DEPTH:
            return False
        wp = x_shape[3] + sum(pads[1])
        ow = wp - self._geometry2d[3][1] * (kernel[1] - 1)
        return wp <= GRID_MAX_WASTE * ow and blas.num_threads() >= 2

    def _forward_grid(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        """One product, the batch in its columns: :func:`plugins.conv_grid.forward_grid`."""
        return forward_grid(self, ctx, x)

    def _backward_grid(self, ctx: Context, g: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """The backward of :meth:`_forward_grid` (:func:`plugins.conv_grid.backward_grid`)."""
        return backward_grid(self, ctx, g, cols)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": compact(self.kernel_size),
            "stride": compact(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else compact(self.padding),
            "dilation": compact(self.dilation),
            "groups": self.groups,
            "activation": serialize("activations", self.activation),
            "bias": self.use_bias,
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={compact(self.kernel_size)}"
        if set(self.stride) != {1}:
            text += f", stride={compact(self.stride)}"
        if self.padding != "valid" and (isinstance(self.padding, str) or set(self.padding) != {0}):
            text += f", padding={self.padding if isinstance(self.padding, str) else compact(self.padding)!r}"
        if set(self.dilation) != {1}:
            text += f", dilation={compact(self.dilation)}"
        return text + self._extra_repr_tail()
