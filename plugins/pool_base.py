"""The machinery the windowed pools share: validation, geometry, shapes, config, max and average.

:class:`_MaxPool` and :class:`_AvgPool` hold the forward and backward of the
2-D and 1-D pools (:mod:`plugins.pooling`, :mod:`plugins.pooling1d`), which
run the functions of :mod:`plugins.pool_ops` on 4-D arrays; what a backward
needs is kept on the call's context, never on the layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.validation import check_bool, int_tuple
from framework.errors import ConfigError, ShapeError
from framework.runtime import jit
from plugins import pool_kernels
from plugins.batch_last import BATCH_LAST_IN, to_batch_last, to_channels_first
from plugins.conv_geometry import compact
from plugins.pool_batch_last import (
    avg_pool_2x2_last,
    avg_pool_2x2_last_backward,
    max_pool_2x2_last,
    max_pool_2x2_last_backward,
)
from plugins.pool_ops import (
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool_divisor,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
    pool_output_size,
)

__all__: list[str] = []


class _Pool(Layer):
    """Shared validation, shapes and config of the windowed pools (subclasses write forward/backward).

    Per-axis hyperparameters are tuples of one entry per spatial axis
    (``_ndim``); the maths runs on 4-D arrays, a 1-D pool viewing its input as
    ``(N, C, 1, L)``.
    """

    _ndim = 2
    _axes = "H, W"

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        kind, n = type(self).__name__, self._ndim
        self.kernel_size = int_tuple(kind, "kernel_size", kernel_size, n)
        self.stride = self.kernel_size if stride is None else int_tuple(kind, "stride", stride, n)
        self.padding = int_tuple(kind, "padding", padding, n, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(
                f"{kind}: padding must be at most half the kernel size (as in PyTorch), "
                f"got padding={self.padding} for kernel_size={self.kernel_size}"
            )
        self.ceil_mode = check_bool(kind, "ceil_mode", ceil_mode)

    def _check_shape(self, shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) != 2 + self._ndim:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, C, {self._axes}), got {format_shape(shape)}"
            )

    def _output_sizes(self, sizes: tuple[int | None, ...]) -> tuple[int | None, ...]:
        out = tuple(
            None
            if size is None
            else pool_output_size(size, self.kernel_size[a], self.stride[a], self.padding[a], self.ceil_mode)
            for a, size in enumerate(sizes)
        )
        if any(s is not None and s <= 0 for s in out):
            padded = tuple(None if s is None else s + 2 * p for s, p in zip(sizes, self.padding))
            raise ShapeError(
                f"{self.describe()}: kernel {self.kernel_size} is larger than the padded input "
                f"{format_shape(padded)} (input {format_shape(sizes)}, padding {self.padding})"
            )
        return out

    def _geometry(self, x_shape: tuple[int, ...]) -> tuple[tuple[int, ...], Any, Any, Any, tuple[int, ...]]:
        """The 4-D view of the problem: input shape, kernel, stride, padding and output sizes.

        The padding is ``((top, bottom), (left, right))``; with ``ceil_mode``
        the bottom/right part grows so that the last window fits.
        """
        sizes = x_shape[2:]
        out = self._output_sizes(sizes)
        pads = tuple(
            (p, p + max(0, (o - 1) * s + k - (size + 2 * p)))
            for size, o, k, s, p in zip(sizes, out, self.kernel_size, self.stride, self.padding)
        )
        if self._ndim == 1:
            return (
                (*x_shape[:2], 1, sizes[0]),
                (1, *self.kernel_size),
                (1, *self.stride),
                ((0, 0), *pads),
                out,
            )
        return x_shape, self.kernel_size, self.stride, pads, out

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        self._output_sizes(input_shape[2:])
        super().build(input_shape)
        self.input_spec = (None,) * (2 + self._ndim)

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return (*input_shape[:2], *self._output_sizes(input_shape[2:]))

    def batch_last_modes(self) -> frozenset[tuple[bool, bool]]:
        """Batch-last in, either layout out (the max and average pools' ``forward_batch_last``):
        2-D, 2x2 windows at stride 2, unpadded, floor mode."""
        simple = self._ndim == 2 and self.kernel_size == (2, 2) and self.stride == (2, 2)
        return BATCH_LAST_IN if simple and set(self.padding) == {0} and not self.ceil_mode else frozenset()

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": compact(self.kernel_size),
            "stride": compact(self.stride),
            "padding": compact(self.padding),
            "ceil_mode": self.ceil_mode,
        }

    def extra_repr(self) -> str:
        text = f"kernel_size={compact(self.kernel_size)}"
        if self.stride != self.kernel_size:
            text += f", stride={compact(self.stride)}"
        if set(self.padding) != {0}:
            text += f", padding={compact(self.padding)}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        return text


class _MaxPool(_Pool):
    """Max pooling: in training mode forward keeps each window's first-maximum offset on ``ctx``.

    In inference mode it keeps only references to its input and output
    (``ctx.saved``); a backward then finds the offsets from them.
    """

    window_max = True

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, out = self._geometry(x.shape)
        x4 = x.reshape(shape4)
        if _kernel_fits(x4, kernel, stride, pads):  # compiled: one pass, the offsets as it goes
            y4, argmax = pool_kernels.max_pool_2x2(x4, with_argmax=ctx.record and ctx.training)
            if ctx.record:
                ctx.x_shape, ctx.argmax, ctx.kernel = x.shape, argmax, True
                ctx.saved = None if ctx.training else (x4, y4)
            return y4.reshape(*x.shape[:2], *out)
        y4 = max_pool2d(x4, kernel, stride, pads)
        if ctx.record:
            ctx.x_shape, ctx.kernel = x.shape, False
            if ctx.training:
                ctx.argmax, ctx.saved = max_pool2d_argmax(x4, y4, kernel, stride, pads), None
            else:
                ctx.argmax, ctx.saved = None, (x4, y4)
        return y4.reshape(*x.shape[:2], *out)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        x_shape = ctx.x_shape
        shape4, kernel, stride, pads, _ = self._geometry(x_shape)
        argmax = ctx.argmax
        if argmax is None:
            argmax = ctx.argmax = max_pool2d_argmax(*ctx.saved, kernel, stride, pads)
        g = grad_out.reshape(argmax.shape)
        if ctx.kernel:
            return pool_kernels.max_pool_2x2_backward(g, argmax, shape4).reshape(x_shape)
        return max_pool2d_backward(g, argmax, shape4, kernel, stride, pads).reshape(x_shape)

    # -- batch-last activations inside a model (framework.models.layouts) --

    def forward_batch_last(self, ctx: Context, x: np.ndarray, in_last: bool, out_last: bool) -> np.ndarray:
        """``forward`` on ``(C, H, W, N)``: ``(C, OH, OW, N)`` with ``out_last``, else ``(N, C, OH, OW)``."""
        x = np.ascontiguousarray(x)
        y, argmax = max_pool_2x2_last(x, with_argmax=ctx.record)
        if ctx.record:
            ctx.x_shape, ctx.argmax, ctx.out_last = x.shape, argmax, out_last
        return y if out_last else to_channels_first(y)

    def backward_batch_last(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        """``backward`` of :meth:`forward_batch_last`: ``dL/dx`` ``(C, H, W, N)``."""
        g = grad_out if ctx.out_last else to_batch_last(grad_out)
        return max_pool_2x2_last_backward(g, ctx.argmax, ctx.x_shape)


def _kernel_fits(x4: np.ndarray, kernel: Any, stride: Any, pads: Any) -> bool:
    """Whether :mod:`plugins.pool_kernels` takes this call: 2x2 windows at stride 2, unpadded, float."""
    return (
        kernel == (2, 2) and stride == (2, 2) and pads == ((0, 0), (0, 0)) and x4.size > 0 and jit.takes(x4)
    )


class _AvgPool(_Pool):
    float_input = True  # an integer input is cast: its averages are not truncated
    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, name=name)
        self.count_include_pad = check_bool(type(self).__name__, "count_include_pad", count_include_pad)

    def _divisor(self, sizes: tuple[int, ...], out: tuple[int, ...]) -> np.ndarray | None:
        """Per-output divisor ``(OH, OW)`` (``(1, L_out)`` in 1-D), or None when it is ``prod(kernel)``."""
        if not self.ceil_mode and (self.count_include_pad or set(self.padding) == {0}):
            return None
        per_axis = [
            avg_pool_divisor(size, k, s, p, o, self.count_include_pad)
            for size, k, s, p, o in zip(sizes, self.kernel_size, self.stride, self.padding, out)
        ]
        return np.outer(per_axis[0], per_axis[-1]) if self._ndim == 2 else per_axis[0][None, :]

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, out = self._geometry(x.shape)
        ctx.x_shape = x.shape
        y = avg_pool2d(x.reshape(shape4), kernel, stride, pads, self._divisor(x.shape[2:], out))
        return y.reshape(*x.shape[:2], *out)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        x_shape = ctx.x_shape
        shape4, kernel, stride, pads, out = self._geometry(x_shape)
        g = grad_out.reshape(*shape4[:2], *(1,) * (2 - self._ndim), *out)
        divisor = self._divisor(x_shape[2:], out)
        return avg_pool2d_backward(g, shape4, kernel, stride, pads, divisor).reshape(x_shape)

    # -- batch-last activations inside a model (framework.models.layouts) --

    def forward_batch_last(self, ctx: Context, x: np.ndarray, in_last: bool, out_last: bool) -> np.ndarray:
        """``forward`` on ``(C, H, W, N)``: ``(C, OH, OW, N)`` with ``out_last``, else ``(N, C, OH, OW)``."""
        ctx.x_shape, ctx.out_last = x.shape, out_last
        y = avg_pool_2x2_last(x)
        return y if out_last else to_channels_first(y)

    def backward_batch_last(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        """``backward`` of :meth:`forward_batch_last`: ``dL/dx`` ``(C, H, W, N)``."""
        g = grad_out if ctx.out_last else to_batch_last(grad_out)
        return avg_pool_2x2_last_backward(g, ctx.x_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.count_include_pad else text + ", count_include_pad=False"
