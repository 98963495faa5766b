"""Built-in plugin: weight initializers (Xavier/Glorot, Kaiming/He, orthogonal, constants).

Every initializer is an :class:`~framework.base.initializer.Initializer`: a callable
``init(shape, dtype=None, rng=None, gain=None) -> ndarray``. ``gain=None``
means the initializer's own default; a layer passes the gain of its activation
(``Linear(..., activation="relu")`` passes ``sqrt(2)``). Initializers whose
distribution does not depend on a gain (constants, ``Normal``, ``Uniform``)
ignore it.

Fans follow :func:`~framework.base.initializer.compute_fans`: a weight of shape
``(out, in, *kernel)`` has ``fan_in = in * prod(kernel)`` and
``fan_out = out * prod(kernel)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.initializer import Initializer, calculate_gain, compute_fans
from framework.base.validation import real_number
from framework.errors import ConfigError
from framework.registry.hookspecs import hookimpl

__all__ = [
    "Zeros",
    "Ones",
    "Constant",
    "Normal",
    "Uniform",
    "XavierUniform",
    "XavierNormal",
    "KaimingUniform",
    "KaimingNormal",
    "Orthogonal",
]

_MODES = ("fan_in", "fan_out")


def _gain(owner: str, gain: float | None, default: float) -> float:
    if gain is None:
        return default
    gain = real_number(owner, "gain", gain)
    if gain < 0:
        raise ConfigError(f"{owner}: gain must be >= 0, got {gain!r}")
    return gain


class Zeros(Initializer):
    """All zeros (the default bias initializer). Ignores ``gain``."""

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        return np.zeros(shape)


class Ones(Initializer):
    """All ones. Ignores ``gain``."""

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        return np.ones(shape)


class Constant(Initializer):
    """Every entry equal to ``value``. Ignores ``gain``.

    Args:
        value: the fill value (default 0.0).
    """

    def __init__(self, value: float = 0.0) -> None:
        self.value = real_number("Constant", "value", value)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        return np.full(shape, self.value)

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class Normal(Initializer):
    """Samples ``N(mean, std^2)``. Ignores ``gain``.

    Args:
        mean: mean of the distribution (default 0.0).
        std: standard deviation, ``>= 0`` (default 1.0).
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        self.mean = real_number("Normal", "mean", mean)
        self.std = real_number("Normal", "std", std)
        if self.std < 0:
            raise ConfigError(f"Normal: std must be >= 0, got {std!r}")

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        return rng.normal(self.mean, self.std, size=shape)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}


class Uniform(Initializer):
    """Samples ``U(low, high)``. Ignores ``gain``.

    Args:
        low: lower bound (default -0.05).
        high: upper bound, ``> low`` (default 0.05).
    """

    def __init__(self, low: float = -0.05, high: float = 0.05) -> None:
        self.low = real_number("Uniform", "low", low)
        self.high = real_number("Uniform", "high", high)
        if not self.low < self.high:
            raise ConfigError(f"Uniform: low must be < high, got low={low!r}, high={high!r}")

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=shape)

    def get_config(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


class XavierUniform(Initializer):
    """Glorot/Xavier uniform (Glorot & Bengio 2010): ``U(-b, b)``.

    ``b = gain * sqrt(6 / (fan_in + fan_out))``, which gives
    ``Var = gain^2 * 2 / (fan_in + fan_out)``. The default gain is 1; a passed
    ``gain`` replaces it.

    Reference: X. Glorot and Y. Bengio, "Understanding the difficulty of
    training deep feedforward neural networks", AISTATS 2010.
    """

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        scale = _gain("XavierUniform", gain, 1.0)
        if math.prod(shape) == 0:  # a zero fan: nothing to draw
            return np.zeros(shape)
        fan_in, fan_out = compute_fans(shape)
        bound = scale * math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, size=shape)


class XavierNormal(Initializer):
    """Glorot/Xavier normal (Glorot & Bengio 2010): ``N(0, std^2)``.

    ``std = gain * sqrt(2 / (fan_in + fan_out))``. The default gain is 1; a
    passed ``gain`` replaces it.

    Reference: X. Glorot and Y. Bengio, "Understanding the difficulty of
    training deep feedforward neural networks", AISTATS 2010.
    """

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        scale = _gain("XavierNormal", gain, 1.0)
        if math.prod(shape) == 0:
            return np.zeros(shape)
        fan_in, fan_out = compute_fans(shape)
        std = scale * math.sqrt(2.0 / (fan_in + fan_out))
        return rng.normal(0.0, std, size=shape)


class _Kaiming(Initializer):
    """Shared arguments of the two Kaiming initializers (PyTorch semantics)."""

    def __init__(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> None:
        owner = type(self).__name__
        self.a = real_number(owner, "a", a)
        if mode not in _MODES:
            raise ConfigError(f"{owner}: mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self.mode = mode
        if not isinstance(nonlinearity, str):
            raise ConfigError(f"{owner}: nonlinearity must be a name such as 'relu', got {nonlinearity!r}")
        try:
            self.default_gain = calculate_gain(nonlinearity, self.a)
        except ConfigError as exc:
            raise ConfigError(f"{owner}: {exc}") from exc
        self.nonlinearity = nonlinearity

    def _fan(self, shape: tuple[int, ...]) -> int:
        fan_in, fan_out = compute_fans(shape)
        return fan_in if self.mode == "fan_in" else fan_out

    def get_config(self) -> dict[str, Any]:
        return {"a": self.a, "mode": self.mode, "nonlinearity": self.nonlinearity}


class KaimingUniform(_Kaiming):
    """He/Kaiming uniform (He et al. 2015): ``U(-b, b)``, ``b = gain * sqrt(3 / fan)``.

    ``fan`` is ``fan_in`` (preserves the forward variance) or ``fan_out``
    (preserves the backward variance). The default gain is
    ``calculate_gain(nonlinearity, a)``: ``sqrt(2 / (1 + a^2))`` for
    ``"leaky_relu"`` with negative slope ``a`` (``sqrt(2)`` for ``a = 0``, i.e.
    ReLU). A passed ``gain`` (a layer's activation gain) replaces it.

    Args:
        a: negative slope of the rectifier after this layer (default 0.0),
            used with ``nonlinearity="leaky_relu"``.
        mode: ``"fan_in"`` (default) or ``"fan_out"``.
        nonlinearity: a name known to ``calculate_gain`` (default ``"leaky_relu"``).

    Reference: K. He, X. Zhang, S. Ren and J. Sun, "Delving deep into
    rectifiers: surpassing human-level performance on ImageNet
    classification", ICCV 2015.
    """

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        scale = _gain("KaimingUniform", gain, self.default_gain)
        if math.prod(shape) == 0:
            return np.zeros(shape)
        bound = scale * math.sqrt(3.0 / self._fan(shape))
        return rng.uniform(-bound, bound, size=shape)


class KaimingNormal(_Kaiming):
    """He/Kaiming normal (He et al. 2015): ``N(0, std^2)``, ``std = gain / sqrt(fan)``.

    Arguments and gain as :class:`KaimingUniform`.

    Reference: K. He, X. Zhang, S. Ren and J. Sun, "Delving deep into
    rectifiers: surpassing human-level performance on ImageNet
    classification", ICCV 2015.
    """

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        scale = _gain("KaimingNormal", gain, self.default_gain)
        if math.prod(shape) == 0:
            return np.zeros(shape)
        std = scale / math.sqrt(self._fan(shape))
        return rng.normal(0.0, std, size=shape)


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix (Saxe et al. 2013), scaled by ``gain``.

    The weight is viewed as a matrix ``(shape[0], prod(shape[1:]))``. A
    Gaussian matrix of that shape (transposed when it has more rows than
    columns) is factored ``A = QR``; the signs of ``Q``'s columns are fixed by
    ``sign(diag(R))`` so the result is uniform (Haar) over orthogonal matrices.
    With ``rows <= cols`` the rows are orthonormal (``W W^T = gain^2 I``),
    otherwise the columns (``W^T W = gain^2 I``).

    Args:
        gain: scale of the result (default 1.0); a gain passed by a layer
            multiplies it.

    Reference: A. M. Saxe, J. L. McClelland and S. Ganguli, "Exact solutions
    to the nonlinear dynamics of learning in deep linear neural networks",
    arXiv:1312.6120, 2013.
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _gain("Orthogonal", gain, 1.0)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, gain: float | None) -> np.ndarray:
        if len(shape) < 2:
            raise ConfigError(
                f"Orthogonal: needs a weight of 2 or more dimensions, got shape {shape}; "
                "use it for Linear/Conv/recurrent weights"
            )
        scale = self.gain * _gain("Orthogonal", gain, 1.0)
        rows, cols = shape[0], math.prod(shape[1:])
        if rows == 0 or cols == 0:
            return np.zeros(shape)
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        signs = np.sign(np.diag(r))
        signs[signs == 0] = 1.0
        q *= signs
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}


@hookimpl
def register_initializers(register: Any) -> None:
    register(Zeros)
    register(Ones)
    register(Constant)
    register(Normal, aliases=("random_normal",))
    register(Uniform, aliases=("random_uniform",))
    register(XavierUniform, aliases=("glorot_uniform",))
    register(XavierNormal, aliases=("glorot_normal",))
    register(KaimingUniform, aliases=("he_uniform",))
    register(KaimingNormal, aliases=("he_normal",))
    register(Orthogonal)
