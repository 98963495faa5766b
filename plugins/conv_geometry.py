"""Window geometry shared by the convolution and pooling functions (NCHW).

Notation: a kernel of ``(kh, kw)``, strides ``(sh, sw)``, dilations
``(dh, dw)`` and padding ``((top, bottom), (left, right))``. Along each
spatial axis the number of output positions is::

    out = floor((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1

Padding may be an int (all sides), a pair ``(ph, pw)`` (both sides of each
axis) or a pair of pairs ``((top, bottom), (left, right))``; the last form
expresses the asymmetric padding of ``padding="same"`` with an even kernel.
The underscored helpers are shared by :mod:`plugins.im2col` and
:mod:`plugins.pool_ops` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.validation import int_tuple
from framework.errors import ConfigError, ShapeError

__all__ = [
    "Pair",
    "Padding2d",
    "pair",
    "expand_padding",
    "same_padding",
    "conv_output_size",
    "pad2d",
    "offset_slices",
    "compact",
    "check_groups",
    "to2d",
]

Pair = tuple[int, int]
Padding2d = tuple[Pair, Pair]


def pair(value: Any) -> Pair:
    """``3 -> (3, 3)``; a pair (tuple or list) is returned as a tuple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def expand_padding(padding: Any) -> Padding2d:
    """Normalise ``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))`` to the last form.

    >>> expand_padding(1)
    ((1, 1), (1, 1))
    >>> expand_padding((1, 2))
    ((1, 1), (2, 2))
    """
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        return pair(padding[0]), pair(padding[1])
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def same_padding(kernel: Any, dilation: Any = 1) -> Padding2d:
    """Padding that keeps ``H, W`` at stride 1; an odd total puts the extra pixel bottom/right.

    This is PyTorch's rule for ``padding="same"``: total ``d * (k - 1)``,
    ``before = total // 2``, ``after = total - before``.

    >>> same_padding((4, 3))
    ((1, 2), (1, 1))
    """
    pads = []
    for k, d in zip(pair(kernel), pair(dilation)):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads[0], pads[1]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: Any = 0, dilation: int = 1) -> int:
    """Number of window positions along one axis: ``floor((size + pads - d(k-1) - 1) / s) + 1``.

    ``padding`` is an int (both sides) or a ``(before, after)`` pair. The result
    is ``<= 0`` when the (dilated) kernel is larger than the padded input; the
    caller decides how to report that.

    >>> conv_output_size(28, 5)
    24
    >>> conv_output_size(28, 3, stride=2, padding=1)
    14
    """
    before, after = pair(padding)
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def pad2d(x: np.ndarray, padding: Any, value: float = 0.0) -> np.ndarray:
    """``x`` with its last two axes padded by ``value``; ``x`` itself when there is no padding."""
    (top, bottom), (left, right) = expand_padding(padding)
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    xp[:, :, top : top + h, left : left + w] = x
    return xp


def offset_slices(
    kernel: Any, stride: Any, out_size: Pair, dilation: Any = 1
) -> list[tuple[int, int, tuple[slice, slice]]]:
    """For each kernel offset ``(i, j)``, the strided slice of the padded input it reads.

    The slice ``(i*dh : ... : sh, j*dw : ... : sw)`` selects, for every output
    position ``(a, b)``, the input pixel ``(a*sh + i*dh, b*sw + j*dw)``.
    """
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(stride), pair(dilation)
    oh, ow = out_size
    return [
        (i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)))
        for i in range(kh)
        for j in range(kw)
    ]


def _output_hw(
    shape: tuple[int, ...],
    kernel: Pair,
    stride: Pair,
    pads: Padding2d,
    dilation: Pair,
    windows: Any = None,
) -> Pair:
    h, w = shape[-2:]
    oh = conv_output_size(h, kernel[0], stride[0], pads[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], pads[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"kernel {kernel} (dilation {dilation}) is larger than the padded input "
            f"{(h + sum(pads[0]), w + sum(pads[1]))}"
        )
    if windows is None:
        return oh, ow
    wh, ww = pair(windows)
    if not (0 < wh <= oh and 0 < ww <= ow):
        raise ShapeError(f"windows {(wh, ww)} must be positive and at most the {(oh, ow)} that fit")
    return wh, ww


def _geometry(
    shape: tuple[int, ...], kernel: Any, stride: Any, padding: Any, dilation: Any = 1, windows: Any = None
) -> tuple[Pair, Pair, Padding2d, Pair, Pair]:
    """The arguments of im2col, col2im and the pools in canonical form, and the output size.

    Returns ``(kernel, stride, pads, dilation, (OH, OW))`` with ``pads`` as
    ``((top, bottom), (left, right))``; ShapeError when the kernel does not fit.
    """
    kernel, stride, dilation = pair(kernel), pair(stride), pair(dilation)
    pads = expand_padding(padding)
    return kernel, stride, pads, dilation, _output_hw(shape, kernel, stride, pads, dilation, windows)


def _padded_zeros(input_shape: tuple[int, int, int, int], pads: Padding2d, dtype: np.dtype) -> np.ndarray:
    """Zeros of ``input_shape`` padded by ``pads``: the buffer a scatter-add writes into before the crop."""
    n, c, h, w = input_shape
    return np.zeros((n, c, h + sum(pads[0]), w + sum(pads[1])), dtype=dtype)


def _crop(xp: np.ndarray, pads: Padding2d) -> np.ndarray:
    """Remove ``pads`` from the last two axes (a contiguous copy; ``xp`` itself if unpadded)."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, top : xp.shape[2] - bottom, left : xp.shape[3] - right])


def compact(values: tuple[int, ...]) -> int | list[int]:
    """``(3, 3) -> 3``, ``(3,) -> 3`` and ``(3, 5) -> [3, 5]``: the JSON form of a size."""
    return values[0] if len(set(values)) == 1 else list(values)


def check_groups(layer: str, in_channels: int, out_channels: int, groups: Any) -> int:
    """``groups`` as an int dividing both channel counts; ConfigError naming the culprit otherwise."""
    groups = int_tuple(layer, "groups", groups, 1)[0]
    for arg, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ConfigError(
                f"{layer}: {arg}={channels} is not divisible by groups={groups}; "
                "groups must divide both in_channels and out_channels"
            )
    return groups


def to2d(values: tuple[Any, ...], fill: Any) -> tuple[Any, Any]:
    """A per-axis tuple of a 1-D layer as the 2-D pair of a height-1 image."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])
