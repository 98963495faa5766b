"""Base class of initializers, the fan computation and the gain table.

An initializer is a callable object
``init(shape, dtype=None, rng=None, gain=None) -> ndarray`` with a
``get_config()``. ``gain=None`` means the initializer's own default; a layer
passes the gain of its activation (see :func:`calculate_gain`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.errors import ConfigError
from framework.runtime.dtype import resolve_dtype
from framework.runtime.random import get_rng

__all__ = ["Initializer", "compute_fans", "calculate_gain", "ones", "skip_initialization"]

#: per thread (a ContextVar): a model built in another thread while one loads gets its real values
_SKIPPING: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_initialization", default=False)


@contextlib.contextmanager
def skip_initialization() -> Iterator[None]:
    """Inside this block initializers return zeros without drawing random numbers.

    Loading a checkpoint rebuilds the model and then overwrites every weight;
    sampling millions of random values first would only cost time and advance
    the global generator.
    """
    token = _SKIPPING.set(True)
    try:
        yield
    finally:
        _SKIPPING.reset(token)


def ones(shape: Any, dtype: Any = None) -> np.ndarray:
    """``np.ones(shape, dtype)``; inside :func:`skip_initialization`, zeros, which the OS maps lazily.

    A layer's constant starting values (BatchNorm's scale and running variance)
    are overwritten when a checkpoint is loaded: made as zeros there, they cost
    no memory until read into, so a config declaring huge sizes is refused by
    the load's byte budget (:mod:`framework.base.allocation`) before it is paid for.
    """
    return np.zeros(shape, dtype) if _SKIPPING.get() else np.ones(shape, dtype)


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
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "convtranspose1d": 1.0,
    "convtranspose2d": 1.0,
    "convtranspose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 0.75,
}


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended init gain for a nonlinearity (PyTorch's ``torch.nn.init.calculate_gain``).

    ================================  ================================
    nonlinearity                      gain
    ================================  ================================
    linear, identity, sigmoid         1
    conv, conv1d/2d/3d,               1
    conv_transpose1d/2d/3d
    tanh                              5/3
    relu                              sqrt(2)
    leaky_relu                        sqrt(2 / (1 + a^2)), a = param (default 0.01)
    selu                              3/4
    ================================  ================================

    Names are matched case-insensitively with ``_`` ignored.

    Raises:
        ConfigError: for a name not in the table (listing the table's names),
            a ``nonlinearity`` that is not a string, or a ``param`` that is not
            a finite real number.
    """
    if not isinstance(nonlinearity, str):
        raise ConfigError(f"calculate_gain: nonlinearity must be a name such as 'relu', got {nonlinearity!r}")
    key = nonlinearity.replace("_", "").lower()
    if key == "leakyrelu":
        if param is None:
            return math.sqrt(2.0 / (1.0 + 0.01**2))
        if not _is_real(param) or not math.isfinite(float(param)):
            raise ConfigError(
                f"calculate_gain: param (the negative slope of leaky_relu) must be a finite real "
                f"number, got {param!r}"
            )
        a = float(param)
        return math.sqrt(2.0 / (1.0 + a * a))
    if key in _GAINS:
        return _GAINS[key]
    known = ["linear", "identity", "conv", "conv1d", "conv2d", "conv3d", "conv_transpose1d"]
    known += ["conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
    raise ConfigError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}; known: {', '.join(known)}")


def _check_shape(owner: str, shape: Any) -> tuple[int, ...]:
    """``shape`` (a tuple of non-negative integers, or one integer) as a tuple of ``int``."""
    dims = shape.tolist() if isinstance(shape, np.ndarray) else shape
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = (dims,)
    if isinstance(dims, (tuple, list)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        return tuple(int(d) for d in dims)
    raise ConfigError(f"{owner}: shape must be a tuple of non-negative integers, got {shape!r}")


class Initializer(Configurable):
    """Base class: subclasses implement :meth:`sample`.

    ``__call__`` checks the shape (a tuple of non-negative integers, or one
    integer for a vector), the dtype and the generator (a
    ``numpy.random.Generator``; ``None`` is the framework's, see
    :func:`framework.set_seed`), then calls ``sample(shape, rng, gain)``
    which returns float64 or float32 values; the result is cast to ``dtype``.
    A zero-size shape gives an empty array, as PyTorch's ``init`` functions
    leave a zero-element tensor alone.
    """

    def __call__(
        self,
        shape: tuple[int, ...] | int,
        dtype: Any = None,
        rng: np.random.Generator | None = None,
        gain: float | None = None,
    ) -> np.ndarray:
        owner = type(self).__name__
        shape = _check_shape(owner, shape)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"{owner}: rng must be a numpy.random.Generator (np.random.default_rng(seed)) or None, "
                f"got {rng!r}"
            )
        resolved = resolve_dtype(dtype)
        if _SKIPPING.get():
            return np.zeros(shape, dtype=resolved)
        values = self.sample(shape, rng if rng is not None else get_rng(), gain)
        return np.asarray(values, dtype=resolved)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def get_config(self) -> dict[str, Any]:
        return {}
