"""Built-in plugin: 2-D pooling layers ``MaxPool2d`` and ``AvgPool2d`` (PyTorch semantics, NCHW)."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError, ShapeError
from framework.hookspecs import hookimpl
from framework.layer import Layer, format_shape
from plugins.conv_ops import (
    avg_pool2d,
    avg_pool2d_backward,
    conv_output_size,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = ["MaxPool2d", "AvgPool2d"]


def _pair_arg(layer: str, arg: str, value: Any, minimum: int) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in items
    ):
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        raise ConfigError(f"{layer}: {arg} must be {kind} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def _compact(pair: tuple[int, int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else list(pair)


class _Pool2d(Layer):
    """Shared validation, shapes and config of the 2-D pools (subclasses write forward/backward)."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        kind = type(self).__name__
        self.kernel_size = _pair_arg(kind, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair_arg(kind, "stride", stride, 1)
        self.padding = _pair_arg(kind, "padding", padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(
                f"{kind}: padding must be at most half the kernel size (as in PyTorch), "
                f"got padding={self.padding} for kernel_size={self.kernel_size}"
            )
        self._argmax: np.ndarray | None = None
        self._x_shape: tuple[int, ...] | None = None

    def _check_shape(self, shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, C, H, W), got {format_shape(shape)}"
            )

    def _output_hw(self, h: int | None, w: int | None) -> tuple[int | None, int | None]:
        sizes = [
            None
            if size is None
            else conv_output_size(size, self.kernel_size[a], self.stride[a], self.padding[a])
            for a, size in enumerate((h, w))
        ]
        if any(s is not None and s <= 0 for s in sizes):
            padded = tuple(None if s is None else s + 2 * p for s, p in zip((h, w), self.padding))
            raise ShapeError(
                f"{self.describe()}: kernel {self.kernel_size} is larger than the padded input "
                f"{format_shape(padded)} (input {format_shape((h, w))}, padding {self.padding})"
            )
        return sizes[0], sizes[1]

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        self._output_hw(input_shape[2], input_shape[3])
        super().build(input_shape)
        self.input_spec = (None, None, None, None)

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return (*input_shape[:2], *self._output_hw(input_shape[2], input_shape[3]))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _compact(self.padding),
        }

    def extra_repr(self) -> str:
        text = f"kernel_size={_compact(self.kernel_size)}"
        if self.stride != self.kernel_size:
            text += f", stride={_compact(self.stride)}"
        if self.padding != (0, 0):
            text += f", padding={_compact(self.padding)}"
        return text


class MaxPool2d(_Pool2d):
    """2-D max pooling, as ``torch.nn.MaxPool2d``: the maximum of each window.

    ``y[n, c, a, b] = max_{i < kh, j < kw} xpad[n, c, a*sh + i, b*sw + j]``,
    where ``xpad`` is ``x`` padded with ``-inf`` (padding never wins).

    Computed as a running ``np.maximum`` over the ``kh*kw`` strided slices of
    the padded input (one per kernel offset), recording for each output which
    offset held the maximum.

    Args:
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``None`` means ``kernel_size``
            (non-overlapping windows).
        padding: ``p`` or ``(ph, pw)`` of ``-inf`` on both sides of each axis,
            at most half the kernel size. Default 0.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)`` with ``OH = floor((H + 2*ph - kh) / sh) + 1``
          and ``OW = floor((W + 2*pw - kw) / sw) + 1``.

    Attributes:
        None (no parameters). The last forward keeps the argmax offsets
        (``(N, C, OH, OW)``, one small integer each) for backward.

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
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._output_hw(x.shape[2], x.shape[3])
        y, self._argmax = max_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._x_shape = x.shape
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return max_pool2d_backward(
            grad_out, self._argmax, self._x_shape, self.kernel_size, self.stride, self.padding
        )


class AvgPool2d(_Pool2d):
    """2-D average pooling, as ``torch.nn.AvgPool2d`` (``count_include_pad=True``).

    ``y[n, c, a, b] = (1 / (kh*kw)) * sum_{i < kh, j < kw} xpad[n, c, a*sh + i, b*sw + j]``,
    where ``xpad`` is ``x`` zero-padded; padded zeros count in the divisor.

    Args:
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``None`` means ``kernel_size``.
        padding: ``p`` or ``(ph, pw)`` zeros on both sides of each axis, at
            most half the kernel size. Default 0.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)`` with ``OH = floor((H + 2*ph - kh) / sh) + 1``
          and ``OW = floor((W + 2*pw - kw) / sw) + 1``.

    Attributes:
        None (no parameters); backward needs only the input's shape.

    Gradient:
        Every input of a window receives an equal share:
        ``dL/dx[n, c, a*sh + i, b*sw + j] += dL/dy[n, c, a, b] / (kh*kw)`` for all
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
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._output_hw(x.shape[2], x.shape[3])
        self._x_shape = x.shape
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return avg_pool2d_backward(grad_out, self._x_shape, self.kernel_size, self.stride, self.padding)


@hookimpl
def register_layers(register: Any) -> None:
    register(MaxPool2d, aliases=("MaxPooling2D",))
    register(AvgPool2d, aliases=("AveragePooling2D", "AvgPooling2D"))
