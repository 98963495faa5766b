"""Built-in plugin: pooling layers (PyTorch semantics): ``MaxPool1d``, ``AvgPool1d``,
``MaxPool2d``, ``AvgPool2d`` and ``GlobalAvgPool2d``.

The 1-D pools run the 2-D functions of :mod:`plugins.conv_ops` on inputs of
height 1. ``ceil_mode`` is extra padding at the bottom/right (``-inf`` for max,
zeros outside the divisor for average), so the same strided-slice loops serve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.base.validation import check_bool, int_tuple
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from plugins.conv_ops import (
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool_divisor,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
    pool_output_size,
)

__all__ = ["MaxPool1d", "AvgPool1d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


def _compact(values: tuple[int, ...]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else list(values)


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
        self._x_shape: tuple[int, ...] | None = None

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

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "padding": _compact(self.padding),
            "ceil_mode": self.ceil_mode,
        }

    def extra_repr(self) -> str:
        text = f"kernel_size={_compact(self.kernel_size)}"
        if self.stride != self.kernel_size:
            text += f", stride={_compact(self.stride)}"
        if set(self.padding) != {0}:
            text += f", padding={_compact(self.padding)}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        return text


class _MaxPool(_Pool):
    window_max = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argmax: np.ndarray | None = None
        # In inference mode forward only keeps its input and output; backward then finds the argmax.
        self._saved: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, out = self._geometry(x.shape)
        x4 = x.reshape(shape4)
        y4 = max_pool2d(x4, kernel, stride, pads)
        if self.training:
            self._argmax, self._saved = max_pool2d_argmax(x4, y4, kernel, stride, pads), None
        else:
            self._argmax, self._saved = None, (x4, y4)
        self._x_shape = x.shape
        return y4.reshape(*x.shape[:2], *out)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, _ = self._geometry(self._x_shape)
        if self._argmax is None:
            self._argmax = max_pool2d_argmax(*self._saved, kernel, stride, pads)
        g = grad_out.reshape(self._argmax.shape)
        return max_pool2d_backward(g, self._argmax, shape4, kernel, stride, pads).reshape(self._x_shape)


class _AvgPool(_Pool):
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, out = self._geometry(x.shape)
        self._x_shape = x.shape
        y = avg_pool2d(x.reshape(shape4), kernel, stride, pads, self._divisor(x.shape[2:], out))
        return y.reshape(*x.shape[:2], *out)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        shape4, kernel, stride, pads, out = self._geometry(self._x_shape)
        g = grad_out.reshape(*shape4[:2], *(1,) * (2 - self._ndim), *out)
        divisor = self._divisor(self._x_shape[2:], out)
        return avg_pool2d_backward(g, shape4, kernel, stride, pads, divisor).reshape(self._x_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.count_include_pad else text + ", count_include_pad=False"


class MaxPool2d(_MaxPool):
    """2-D max pooling, as ``torch.nn.MaxPool2d``: the maximum of each window.

    ``y[n, c, a, b] = max_{i < kh, j < kw} xpad[n, c, a*sh + i, b*sw + j]``,
    where ``xpad`` is ``x`` padded with ``-inf`` (padding never wins).

    Computed as ``np.maximum`` over the ``kh`` strided row slices of the
    padded input, then over the ``kw`` column slices of that. In training mode
    the offset of each window's first maximum is then found by comparing each
    of the ``kh*kw`` slices with the output (no running argmax); in inference
    mode only if ``backward`` asks for it.

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
        None (no parameters). The last forward keeps the offset of each
        window's first maximum (``(N, C, OH, OW)``, one small integer each) in
        training mode, and references to its input and output in inference
        mode (neither may then be changed in place before ``backward``).

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
        None (no parameters); the last forward keeps the first-maximum offsets
        (training) or its input and output (inference) for backward.

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


class GlobalAvgPool2d(Layer):
    """Global average pooling: the mean of each channel over all positions, ``(N, C, H, W) -> (N, C)``.

    ``y[n, c] = (1 / (H*W)) * sum_{a, b} x[n, c, a, b]`` (Keras' ``GlobalAveragePooling2D``;
    ``torch.nn.AdaptiveAvgPool2d(1)`` followed by a flatten).

    Args:
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``; ``H`` and ``W`` may vary between calls.
        - Output: ``(N, C)``.

    Attributes:
        None (no parameters); backward needs only the input's shape.

    Gradient:
        ``dL/dx[n, c, a, b] = dL/dy[n, c] / (H*W)`` for every position.

    Example:
        >>> import numpy as np
        >>> from framework.layers import GlobalAvgPool2d
        >>> GlobalAvgPool2d()(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
        array([[1.5, 5.5]], dtype=float32)
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._x_shape: tuple[int, ...] | None = None

    def _check_shape(self, shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) != 4 or 0 in shape[2:]:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, C, H, W) with H, W > 0, "
                f"got {format_shape(shape)}"
            )

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        super().build(input_shape)
        self.input_spec = (None, None, None, None)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x.shape)
        self._x_shape = x.shape
        n, c, h, w = x.shape
        if x.dtype.kind != "f":
            return x.mean(axis=(2, 3))
        # The mean as a matrix-vector product with 1/(H*W): several times faster than x.mean(axis=(2, 3)).
        weights = np.full(h * w, 1.0 / (h * w), dtype=x.dtype)
        return (x.reshape(n * c, h * w) @ weights).reshape(n, c)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        h, w = self._x_shape[2:]
        share = grad_out * grad_out.dtype.type(1.0 / (h * w))
        return np.broadcast_to(share[:, :, None, None], self._x_shape).copy()

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return tuple(input_shape[:2])


@hookimpl
def register_layers(register: Any) -> None:
    register(MaxPool1d, aliases=("MaxPooling1D",))
    register(AvgPool1d, aliases=("AveragePooling1D", "AvgPooling1D"))
    register(MaxPool2d, aliases=("MaxPooling2D",))
    register(AvgPool2d, aliases=("AveragePooling2D", "AvgPooling2D"))
    register(GlobalAvgPool2d, aliases=("GlobalAveragePooling2D",))
