"""FeatureScale: a learnable per-feature (per-channel) scale."""

from __future__ import annotations

from typing import Any

import numpy as np
from framework.dtype import get_default_dtype
from framework.layer import format_shape

from framework import ConfigError, Layer, Parameter, ShapeError

__all__ = ["FeatureScale"]


class FeatureScale(Layer):
    """Multiplies each feature (axis 1) by its own learnable factor: ``y = x * gamma``.

    ``gamma`` broadcasts over every axis but axis 1, so the layer serves
    ``(N, C)`` features and ``(N, C, H, W)`` images alike (one factor per
    channel), like the affine part of a normalisation layer without the shift.

    Args:
        num_features: the size ``C`` of axis 1; ``None`` (default) infers it
            from the first input.
        init: the starting value of every factor (default ``1.0``, the identity).
        name: layer name.

    Shape:
        - Input: ``(N, C, *)``
        - Output: ``(N, C, *)``, the same.

    Attributes:
        gamma: ``Parameter`` of shape ``(C,)``, filled with ``init``.

    Gradient:
        With ``G = dL/dy``: ``dL/dgamma_c = sum over n and * of G[n, c, *] x[n, c, *]``
        and ``dL/dx = G * gamma`` (broadcast over axis 1).

    Example:
        >>> import numpy as np
        >>> layer = FeatureScale(init=2.0)
        >>> layer(np.ones((2, 3), dtype=np.float32)).tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """

    def __init__(
        self, num_features: int | None = None, init: float = 1.0, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        if num_features is not None and (
            isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0
        ):
            raise ConfigError(
                f"FeatureScale: num_features must be a positive integer or None, got {num_features!r}"
            )
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not np.isfinite(init):
            raise ConfigError(f"FeatureScale: init must be a finite number, got {init!r}")
        self.num_features = num_features
        self.init = float(init)
        self.gamma: Parameter | None = None

    def build(self, input_shape: Any) -> None:
        if len(input_shape) < 2:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, C, *), got {format_shape(input_shape)}"
            )
        channels = input_shape[1]
        if self.num_features is not None and channels != self.num_features:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.num_features}, *), "
                f"got {format_shape(input_shape)}"
            )
        self.num_features = int(channels)
        self.gamma = Parameter(np.full(self.num_features, self.init, dtype=get_default_dtype()))
        super().build(input_shape)

    def _broadcast(self, ndim: int) -> np.ndarray:
        return self.gamma.data.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x * self._broadcast(x.ndim)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        axes = (0, *range(2, grad_out.ndim))
        self.gamma.grad += (grad_out * self._x).sum(axis=axes)
        return grad_out * self._broadcast(grad_out.ndim)

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) < 2 or (self.num_features is not None and input_shape[1] != self.num_features):
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.num_features}, *), "
                f"got {format_shape(input_shape)}"
            )
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_features": self.num_features, "init": self.init}
