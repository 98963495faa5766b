"""Base class of initializers, the fan computation and the gain table.

An initializer is a callable object
``init(shape, dtype=None, rng=None, gain=None) -> ndarray`` with a
``get_config()``. ``gain=None`` means the initializer's own default; a layer
passes the gain of its activation (see :func:`calculate_gain`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.errors import ConfigError
from framework.runtime.dtype import resolve_dtype
from framework.runtime.random import get_rng

__all__ = ["Initializer", "compute_fans", "calculate_gain", "skip_initialization"]

_skip_depth = 0


@contextlib.contextmanager
def skip_initialization() -> Iterator[None]:
    """Inside this block initializers return zeros without drawing random numbers.

    Loading a checkpoint rebuilds the model and then overwrites every weight;
    sampling millions of random values first would only cost time and advance
    the global generator.
    """
    global _skip_depth
    _skip_depth += 1
    try:
        yield
    finally:
        _skip_depth -= 1


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``.

    - ``(out, in)`` (Linear): ``fan_in = in``, ``fan_out = out``;
    - ``(out, in, *kernel)`` (convolution): both multiplied by the receptive
      field ``prod(kernel)``;
    - ``(n,)``: ``fan_in = fan_out = n``; ``()``: ``1, 1``.

    >>> compute_fans((6, 3, 5, 5))
    (75, 150)
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "conv": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 0.75,
}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended init gain for a nonlinearity.

    ============  ================================
    nonlinearity  gain
    ============  ================================
    linear, conv  1
    identity      1
    sigmoid       1
    tanh          5/3
    relu          sqrt(2)
    leaky_relu    sqrt(2 / (1 + a^2)), a = param (default 0.01)
    selu          3/4
    ============  ================================

    Raises:
        ConfigError: for a name not in the table, listing the table's names.
    """
    key = nonlinearity.replace("_", "").lower()
    if key == "leakyrelu":
        a = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + a * a))
    for name, gain in _GAINS.items():
        if key == name:
            return gain
    raise ConfigError(
        f"calculate_gain: unknown nonlinearity {nonlinearity!r}; "
        f"known: {', '.join(sorted([*_GAINS, 'leaky_relu']))}"
    )


class Initializer(Configurable):
    """Base class: subclasses implement :meth:`sample`.

    ``__call__`` resolves the dtype and generator, then calls
    ``sample(shape, rng, gain)`` which returns float64 or float32 values; the
    result is cast to ``dtype``.
    """

    def __call__(
        self,
        shape: tuple[int, ...],
        dtype: Any = None,
        rng: np.random.Generator | None = None,
        gain: float | None = None,
    ) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ConfigError(f"{type(self).__name__}: shape must be non-negative, got {shape}")
        if _skip_depth:
            return np.zeros(shape, dtype=resolve_dtype(dtype))
        values = self.sample(shape, rng if rng is not None else get_rng(), gain)
        return np.asarray(values, dtype=resolve_dtype(dtype))

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def get_config(self) -> dict[str, Any]:
        return {}
