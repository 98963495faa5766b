"""LeCun normal initialisation (LeCun et al. 1998, "Efficient BackProp")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from framework.initializer import Initializer, compute_fans

from framework import ConfigError

__all__ = ["LecunNormal"]


class LecunNormal(Initializer):
    """Samples ``N(0, std^2)`` with ``std = gain * scale / sqrt(fan_in)``.

    With the default gain 1 the variance is ``1 / fan_in``, which keeps the
    activations' variance constant through a linear (or SELU) layer. A layer
    passes its activation's gain, which multiplies ``std``.

    Args:
        scale: an extra factor on ``std`` (default ``1.0``).

    Example:
        >>> import numpy as np
        >>> w = LecunNormal()((256, 400), rng=np.random.default_rng(0))
        >>> round(float(w.std() * 20), 1)  # std = 1 / sqrt(400) = 0.05
        1.0
    """

    def __init__(self, scale: float = 1.0) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"LecunNormal: scale must be a number > 0, got {scale!r}")
        self.scale = float(scale)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        fan_in, _ = compute_fans(shape)
        std = (1.0 if gain is None else float(gain)) * self.scale / math.sqrt(max(fan_in, 1))
        return rng.standard_normal(shape) * std

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale}
