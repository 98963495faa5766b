"""Built-in plugin: shape layers: Reshape, Permute, ZeroPadding2d and UpSampling2d.

None of them has parameters; each backward moves the gradient back to the
input's layout (the inverse reshape or permutation, the crop of the padding,
the sum over each upsampled block).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl

__all__ = ["Reshape", "Permute", "ZeroPadding2d", "UpSampling2d"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int_tuple(layer: str, arg: str, value: Any, lengths: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """``value`` (an int or a sequence of one of ``lengths``) as a tuple of ints ``>= minimum``."""
    items = (value,) if _is_int(value) else value
    if (
        not isinstance(items, (tuple, list))
        or (len(items) not in lengths and not _is_int(value))
        or not all(_is_int(v) and v >= minimum for v in items)
    ):
        forms = " or ".join(f"{n} integers" for n in lengths)
        raise ConfigError(f"{layer}: {arg} must be an integer or {forms}, each >= {minimum}; got {value!r}")
    return tuple(int(v) for v in items)


def _require_rank(layer: Layer, shape: Any, rank: int, layout: str) -> None:
    if shape is None or len(shape) != rank:
        raise ShapeError(f"{layer.describe()} expected input of shape {layout}, got {format_shape(shape)}")


class Reshape(Layer):
    """Reshapes each sample to ``target_shape``, keeping the batch axis (Keras's ``Reshape``).

    ``y[n] = x[n].reshape(target_shape)`` in C (row-major) order. One entry
    may be ``-1``: it is inferred from the sample's size.

    Args:
        *shape: the target shape without the batch axis, as separate integers
            (``Reshape(4, 7)``) or one tuple (``Reshape((4, 7))``).
        target_shape: the same, as a keyword (what :meth:`get_config` writes).
        name: layer name.

    Shape:
        - Input: ``(N, *)`` with ``prod(*)`` elements per sample.
        - Output: ``(N, *target_shape)``, where ``prod(target_shape) = prod(*)``.

    Gradient:
        A reshape only relabels elements: ``dL/dx = (dL/dy).reshape(x.shape)``.

    Example:
        >>> import numpy as np
        >>> Reshape(4, -1)(np.zeros((2, 3, 8))).shape
        (2, 4, 6)
    """

    def __init__(self, *shape: Any, target_shape: Any = None, name: str | None = None) -> None:
        super().__init__(name=name)
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if shape and target_shape is not None:
            raise ConfigError(
                f"Reshape: give the target shape once, got {shape!r} and target_shape={target_shape!r}"
            )
        if not shape:
            shape = () if target_shape is None else tuple(target_shape)
        if not shape or not all(_is_int(d) and (d > 0 or d == -1) for d in shape):
            raise ConfigError(
                f"Reshape: the target shape must be one or more positive integers (one may be -1), "
                f"got {shape!r}"
            )
        if list(shape).count(-1) > 1:
            raise ConfigError(f"Reshape: only one entry of the target shape may be -1, got {shape!r}")
        self.target_shape = tuple(int(d) for d in shape)

    def _resolve(self, sample_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        """The target shape for samples of ``sample_shape``, with ``-1`` filled in."""
        if any(d is None for d in sample_shape):
            return tuple(None if d == -1 else d for d in self.target_shape)
        size = math.prod(sample_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            ok = size % known == 0
            expected = f"a multiple of {known}"
        else:
            ok = size == known
            expected = str(known)
        if not ok:
            raise ShapeError(
                f"{self.describe()}: cannot reshape samples of shape {format_shape(sample_shape)} "
                f"({size} elements) to {format_shape(self.target_shape)}: expected {expected} elements "
                f"per sample, got {size}"
            )
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def build(self, input_shape: Any) -> None:
        self._resolve(tuple(input_shape)[1:])
        super().build(input_shape)
        self.input_spec = None  # sizes are checked against the target in forward

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.in_shape = x.shape
        return x.reshape(x.shape[0], *self._resolve(x.shape[1:]))

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(ctx.in_shape)

    def output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], *self._resolve(tuple(input_shape)[1:]))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}

    def extra_repr(self) -> str:
        return ", ".join(str(d) for d in self.target_shape)


class Permute(Layer):
    """Permutes the non-batch axes (Keras's ``Permute``): ``y = x.transpose(0, *dims)``.

    ``dims`` numbers the axes from 1, as Keras does (axis 0 is the batch):
    ``Permute((2, 1))`` swaps the two axes of ``(N, A, B)`` inputs, and
    ``Permute((2, 3, 1))`` turns NCHW into NHWC.

    Args:
        dims: a permutation of ``1 .. k`` for inputs of rank ``k + 1``.
        name: layer name.

    Shape:
        - Input: ``(N, d_1, ..., d_k)``.
        - Output: ``(N, d_dims[0], ..., d_dims[k-1])``.

    Gradient:
        ``dL/dx = (dL/dy).transpose(0, *inverse)`` with ``inverse`` the inverse
        permutation (``inverse[dims[i] - 1] = i + 1``).

    Example:
        >>> import numpy as np
        >>> Permute((2, 3, 1))(np.zeros((8, 3, 32, 16))).shape
        (8, 32, 16, 3)
    """

    def __init__(self, dims: Any, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if (
            not isinstance(dims, (tuple, list))
            or not dims
            or not all(_is_int(d) for d in dims)
            or sorted(dims) != list(range(1, len(dims) + 1))
        ):
            raise ConfigError(
                f"Permute: dims must be a permutation of 1..k (axis 0 is the batch and stays), got {dims!r}"
            )
        self.dims = tuple(int(d) for d in dims)
        self._inverse = (0, *(int(i) + 1 for i in np.argsort(self.dims)))

    def _check_rank(self, shape: Any) -> None:
        layout = "(N, " + ", ".join(f"d{i}" for i in range(1, len(self.dims) + 1)) + ")"
        _require_rank(self, shape, len(self.dims) + 1, layout)

    def build(self, input_shape: Any) -> None:
        self._check_rank(input_shape)
        super().build(input_shape)
        self.input_spec = (None,) * len(input_shape)  # any sizes of this rank

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return x.transpose(0, *self.dims)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.transpose(self._inverse)

    def output_shape(self, input_shape: Any) -> Any:
        self._check_rank(input_shape)
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dims": list(self.dims)}


class ZeroPadding2d(Layer):
    """Pads the two spatial axes of NCHW images with zeros (PyTorch's ``ZeroPad2d``).

    ``y[:, :, top : top + H, left : left + W] = x``, zeros elsewhere.

    Args:
        padding: an int (the same on all four sides), a pair ``(ph, pw)``
            (``ph`` rows above and below, ``pw`` columns left and right, as
            Keras), or a 4-tuple ``(left, right, top, bottom)`` (PyTorch's
            order). Every entry ``>= 0``.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H + top + bottom, W + left + right)``.

    Gradient:
        The padding is constant, so ``dL/dx`` is ``dL/dy`` cropped back:
        ``dL/dy[:, :, top : top + H, left : left + W]``.

    Example:
        >>> import numpy as np
        >>> ZeroPadding2d((1, 2, 0, 3))(np.ones((1, 2, 4, 4))).shape
        (1, 2, 7, 7)
    """

    def __init__(self, padding: Any = 1, *, name: str | None = None) -> None:
        super().__init__(name=name)
        pad = _int_tuple("ZeroPadding2d", "padding", padding, (2, 4), 0)
        if len(pad) == 1:
            pad = pad * 4
        elif len(pad) == 2:
            pad = (pad[1], pad[1], pad[0], pad[0])
        self.padding = pad  # (left, right, top, bottom)

    def build(self, input_shape: Any) -> None:
        _require_rank(self, input_shape, 4, "(N, C, H, W)")
        super().build(input_shape)
        self.input_spec = (None, input_shape[1], None, None)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        left, right, top, bottom = self.padding
        n, c, h, w = x.shape
        out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
        out[:, :, top : top + h, left : left + w] = x
        ctx.hw = (h, w)
        return out

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        left, _, top, _ = self.padding
        h, w = ctx.hw
        return grad_out[:, :, top : top + h, left : left + w]

    def output_shape(self, input_shape: Any) -> Any:
        _require_rank(self, input_shape, 4, "(N, C, H, W)")
        left, right, top, bottom = self.padding
        n, c, h, w = input_shape
        return (n, c, None if h is None else h + top + bottom, None if w is None else w + left + right)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": list(self.padding)}


class UpSampling2d(Layer):
    """Nearest-neighbour upsampling of NCHW images by integer factors.

    Each pixel becomes an ``sh x sw`` block of copies:
    ``y[n, c, i, j] = x[n, c, i // sh, j // sw]``.

    Args:
        scale_factor: an int or a pair ``(sh, sw)`` of positive integers
            (default 2).
        mode: ``"nearest"``, the only mode.
        name: layer name.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H * sh, W * sw)``.

    Gradient:
        Every input pixel feeds its whole block, so its gradient is the block's
        sum: ``dL/dx = (dL/dy).reshape(N, C, H, sh, W, sw).sum(axis=(3, 5))``.

    Example:
        >>> import numpy as np
        >>> UpSampling2d(scale_factor=(2, 3))(np.ones((1, 1, 4, 5))).shape
        (1, 1, 8, 15)
    """

    _MODES = ("nearest",)

    def __init__(self, scale_factor: Any = 2, mode: str = "nearest", *, name: str | None = None) -> None:
        super().__init__(name=name)
        factor = _int_tuple("UpSampling2d", "scale_factor", scale_factor, (2,), 1)
        self.scale_factor = factor * 2 if len(factor) == 1 else factor
        if mode not in self._MODES:
            raise ConfigError(f"UpSampling2d: mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode

    def build(self, input_shape: Any) -> None:
        _require_rank(self, input_shape, 4, "(N, C, H, W)")
        super().build(input_shape)
        self.input_spec = (None, input_shape[1], None, None)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        sh, sw = self.scale_factor
        blocks = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw))
        return blocks.reshape(n, c, h * sh, w * sw)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        n, c, hs, ws = grad_out.shape
        sh, sw = self.scale_factor
        return grad_out.reshape(n, c, hs // sh, sh, ws // sw, sw).sum(axis=(3, 5))

    def output_shape(self, input_shape: Any) -> Any:
        _require_rank(self, input_shape, 4, "(N, C, H, W)")
        n, c, h, w = input_shape
        sh, sw = self.scale_factor
        return (n, c, None if h is None else h * sh, None if w is None else w * sw)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale_factor": list(self.scale_factor), "mode": self.mode}


@hookimpl
def register_layers(register: Any) -> None:
    register(Reshape)
    register(Permute)
    register(ZeroPadding2d, aliases=("ZeroPad2d",))
    register(UpSampling2d, aliases=("UpsamplingNearest2d",))
