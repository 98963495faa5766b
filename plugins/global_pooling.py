"""``GlobalAvgPool2d``: the mean of each channel over all positions.

Registered by the ``plugins.pooling`` entry point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.errors import ShapeError

__all__ = ["GlobalAvgPool2d"]

_CLOSES = frozenset({(True, False)})


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

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True
    float_input = True  # an integer or boolean input is cast to the default float dtype

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

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self._check_shape(x.shape)
        ctx.x_shape = x.shape
        n, c, h, w = x.shape
        if x.dtype.kind != "f":
            return x.mean(axis=(2, 3))
        # The mean as a matrix-vector product with 1/(H*W): several times faster than x.mean(axis=(2, 3)).
        weights = np.full(h * w, 1.0 / (h * w), dtype=x.dtype)
        return (x.reshape(n * c, h * w) @ weights).reshape(n, c)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        x_shape = ctx.x_shape
        h, w = x_shape[2:]
        share = grad_out * grad_out.dtype.type(1.0 / (h * w))
        return np.broadcast_to(share[:, :, None, None], x_shape).copy()

    # -- closing a batch-last run inside a model (framework.models.layouts) --

    def batch_last_modes(self) -> frozenset[tuple[bool, bool]]:
        """Batch-last in, ``(N, C)`` out: the means of rows of ``H*W`` batch-last vectors."""
        return _CLOSES

    def forward_batch_last(self, ctx: Context, x: np.ndarray, in_last: bool, out_last: bool) -> np.ndarray:
        """``forward`` on ``(C, H, W, N)``, giving ``(N, C)``."""
        c, h, w, n = x.shape
        ctx.x_shape = x.shape
        weights = np.full((1, h * w), 1.0 / (h * w), dtype=x.dtype)
        means = np.matmul(weights, np.ascontiguousarray(x).reshape(c, h * w, n))  # (C, 1, N)
        return np.ascontiguousarray(means.reshape(c, n).T)

    def backward_batch_last(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        """``backward`` of :meth:`forward_batch_last`: ``dL/dx`` ``(C, H, W, N)``."""
        h, w = ctx.x_shape[1:3]
        share = grad_out.T * grad_out.dtype.type(1.0 / (h * w))
        return np.broadcast_to(share[:, None, None, :], ctx.x_shape).copy()

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return tuple(input_shape[:2])
