"""Built-in plugin: activation functions as parameter-free layers.

Each activation is a :class:`~framework.base.layer.Layer` with a hand-written
``backward``, so one class serves as ``Linear(..., activation="relu")`` and as a
standalone layer (``from framework.layers import ReLU``). Each is registered
twice: as an activation under its functional name (``"relu"``,
``"leaky_relu"``...) and as a layer under PyTorch's class name (``ReLU``,
``LeakyReLU``...). Names match case-insensitively with ``_`` ignored, so
``framework.activations.get("LeakyReLU")`` works too.

Every activation has a ``gain`` (the init gain a preceding layer passes to its
weight initializer, as ``torch.nn.init.calculate_gain``), accepts inputs of any
shape, and keeps float32 inputs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import get_default_dtype

__all__ = [
    "ActivationLayer",
    "IdentityActivation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "GELU",
    "SiLU",
    "Softplus",
    "erfc",
    "normal_cdf",
]


# -- the complementary error function --------------------------------------
#
# NumPy has no erf. erfcx(t) = exp(t^2) erfc(t) is smooth for t >= 0 and decays
# like 1 / (sqrt(pi) t), so H = (1 + 2t) erfcx(t) is smooth and bounded on
# [0, inf) (H(0) = 1, H(inf) = 2 / sqrt(pi)). With u = (t - k) / (t + k), which
# maps [0, inf) onto [-1, 1), H is tabulated as one Chebyshev interpolant in u
# (the transform of Weideman, SIAM J. Numer. Anal. 31, 1994). Its coefficients
# are computed once at import from math.erfc (an asymptotic series past
# t = 26, where exp(t^2) would overflow). One interpolant means no masking or
# branching over the array. Relative error of erfc is about 1e-13 in float64
# (the rounding of t^2 in exp(-t^2) dominates), absolute below 1e-15. Float32
# and float16 use the leading 12 and 7 coefficients: the dropped tail (~5e-9
# and ~2e-5) is below their rounding error.

_SQRT_PI = math.sqrt(math.pi)
_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_ERFCX_K = 3.0


def _erfcx_reference(t: float) -> float:
    if t < 26.0:
        return math.exp(t * t) * math.erfc(t)
    z = 1.0 / (2.0 * t * t)
    series = 1.0 - z * (
        1.0 - 3.0 * z * (1.0 - 5.0 * z * (1.0 - 7.0 * z * (1.0 - 9.0 * z * (1.0 - 11.0 * z))))
    )
    return series / (t * _SQRT_PI)


def _h_of_u(u: float) -> float:
    if u >= 1.0:
        return 2.0 / _SQRT_PI
    t = _ERFCX_K * (1.0 + u) / (1.0 - u)
    return (1.0 + 2.0 * t) * _erfcx_reference(t)


def _chebyshev_interpolant(f: Callable[[float], float], degree: int) -> np.ndarray:
    """Chebyshev coefficients of the interpolant of ``f`` on ``[-1, 1]`` (first-kind nodes)."""
    k = np.arange(degree + 1)
    nodes = np.cos(np.pi * (k + 0.5) / (degree + 1))
    return np.polynomial.chebyshev.chebfit(nodes, np.array([f(u) for u in nodes]), degree)


_H_COEF = {
    np.dtype(np.float64): _chebyshev_interpolant(_h_of_u, 26),
}
_H_COEF[np.dtype(np.float32)] = _H_COEF[np.dtype(np.float64)][:12].astype(np.float32)
_H_COEF[np.dtype(np.float16)] = _H_COEF[np.dtype(np.float64)][:7].astype(np.float16)


def _clenshaw(coef: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Evaluate ``sum_k coef[k] T_k(s)`` by Clenshaw's recurrence, in ``s.dtype``.

    ``b_k = coef[k] + 2 s b_{k+1} - b_{k+2}``; the sum is ``coef[0] + s b_1 - b_2``.
    """
    two_s = s + s
    b1 = np.full_like(s, coef[-1])
    b2 = np.zeros_like(s)
    tmp = np.empty_like(s)
    for c in coef[-2:0:-1]:
        np.multiply(two_s, b1, out=tmp)
        tmp -= b2
        tmp += c
        b1, b2, tmp = tmp, b1, b2
    np.multiply(s, b1, out=tmp)
    tmp -= b2
    tmp += coef[0]
    return tmp


def _erfc_and_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(erfc(x), exp(-x^2))``, the second being a by-product GELU's backward reuses."""
    f = x.dtype.type
    t = np.abs(x)
    gaussian = np.minimum(t, f(40.0))  # erfc(40) underflows; keeps t*t finite
    gaussian *= gaussian
    np.exp(-gaussian, out=gaussian)
    k = f(_ERFCX_K)
    u = f(1.0) - f(2.0 * _ERFCX_K) / (t + k)  # = (t - k) / (t + k), and 1 at t = inf
    positive = _clenshaw(_H_COEF[x.dtype], u)
    positive *= gaussian
    positive /= f(1.0) + f(2.0) * t
    # erfc(-t) = 2 - erfc(t); blend arithmetically, exact for x >= 0
    negative = x < 0
    return positive + negative * (f(2.0) - f(2.0) * positive), gaussian


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function ``erfc(x) = 1 - erf(x)``, elementwise.

    Accurate to about 1e-15 absolute and 1e-13 relative in float64, also
    deep in the tail (``erfc(10) ~ 2e-45``); float32 input is evaluated in
    float32 (relative error ~1e-7).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return _erfc_and_gaussian(x)[0]


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF ``Phi(x) = erfc(-x / sqrt(2)) / 2``, accurate in both tails."""
    x = np.asarray(x)
    return x.dtype.type(0.5) * erfc(-x * x.dtype.type(1.0 / _SQRT_2))


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(-|x|)`` never exceeds 1."""
    e = np.exp(-np.abs(x))
    # numerator: 1 for x >= 0, exp(x) = e otherwise (e <= 1)
    return np.maximum(e, x >= 0) / (x.dtype.type(1.0) + e)


def _as_float(x: Any) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(get_default_dtype())


_ZEROS: dict[tuple[Any, ...], np.ndarray] = {}


def _zeros_like(x: np.ndarray) -> np.ndarray:
    """A read-only array of zeros with ``x``'s shape, dtype and memory order, kept for reuse.

    ``np.maximum(x, zeros)`` runs about three times faster than
    ``np.maximum(x, 0)`` (NumPy 2.4, float32: 8.5 against 25 us for 64k values),
    whose scalar operand takes a slower loop. The zeros come from ``np.zeros``,
    whose pages the kernel maps to its shared zero page when only read.
    """
    order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
    key = (x.shape, x.dtype.str, order)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) >= 16:
            _ZEROS.clear()  # one call, safe with other threads (next(iter()) then pop is not)
        zeros = _ZEROS[key] = np.zeros(x.shape, dtype=x.dtype, order=order)
        zeros.setflags(write=False)
    return zeros


def _real(owner: str, arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{owner}: {arg} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{owner}: {arg} must be finite, got {value!r}")
    return value


# -- the layers -------------------------------------------------------------


class ActivationLayer(Layer):
    """Base of the built-in activations: parameter-free, any input shape.

    Subclasses write ``forward`` (caching what ``backward`` needs) and
    ``backward``; ``gain`` is the init gain of the nonlinearity (1 unless
    overridden).
    """

    gain: ClassVar[float] = 1.0

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None


class IdentityActivation(ActivationLayer):
    """``f(x) = x``: the activation ``"identity"`` (alias ``"linear"``).

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        return _as_float(x)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out


class ReLU(ActivationLayer):
    """Rectified linear unit: ``f(x) = max(x, 0)``. Gain ``sqrt(2)``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy * [x > 0]`` (0 at the kink ``x = 0``, as PyTorch).

    Example:
        >>> import numpy as np
        >>> from framework.layers import ReLU
        >>> ReLU()(np.array([[-1.0, 2.0]]))
        array([[0., 2.]])
    """

    gain = math.sqrt(2.0)
    monotone_elementwise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        self._mask = x > 0
        return np.maximum(x, _zeros_like(x))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self.grad_out_writable and grad_out.dtype.kind == "f":
            return np.multiply(grad_out, self._mask, out=grad_out)
        return grad_out * self._mask


class LeakyReLU(ActivationLayer):
    """Leaky ReLU: ``f(x) = x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Gain ``sqrt(2 / (1 + negative_slope^2))``.

    Args:
        negative_slope: slope for negative inputs (default 0.01).

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy * (1 if x > 0 else negative_slope)``.
    """

    def __init__(self, negative_slope: float = 0.01, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.negative_slope = _real("LeakyReLU", "negative_slope", negative_slope)

    @property
    def gain(self) -> float:  # type: ignore[override]
        return math.sqrt(2.0 / (1.0 + self.negative_slope**2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        mask = x > 0
        # the local slope: exactly 1 where x > 0, exactly negative_slope elsewhere
        self._slope = mask + ~mask * x.dtype.type(self.negative_slope)
        return x * self._slope

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self._slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(ActivationLayer):
    """Exponential linear unit: ``f(x) = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise.

    Args:
        alpha: scale of the negative saturation (default 1.0).

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy * (1 if x > 0 else alpha exp(x))``; for ``x <= 0``
        that is ``f(x) + alpha``.
    """

    def __init__(self, alpha: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.alpha = _real("ELU", "alpha", alpha)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        alpha = x.dtype.type(self.alpha)
        zero = x.dtype.type(0.0)
        self._mask = x > 0
        # alpha (exp(x) - 1), exactly 0 for x >= 0, so the sum below selects per branch
        self._neg = alpha * np.expm1(np.minimum(x, zero))
        return np.maximum(x, zero) + self._neg

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        mask = self._mask
        slope = mask + ~mask * (self._neg + grad_out.dtype.type(self.alpha))
        return grad_out * slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha}


class Sigmoid(ActivationLayer):
    """Logistic sigmoid: ``f(x) = 1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    Shape:
        - Input: ``(N, *)``; Output: the same, in ``(0, 1)``.

    Gradient:
        ``dL/dx = dL/dy * y (1 - y)``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = _stable_sigmoid(_as_float(x))
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        return grad_out * (y * (y.dtype.type(1.0) - y))


class Tanh(ActivationLayer):
    """Hyperbolic tangent: ``f(x) = tanh(x)``. Gain ``5/3``.

    Shape:
        - Input: ``(N, *)``; Output: the same, in ``(-1, 1)``.

    Gradient:
        ``dL/dx = dL/dy * (1 - y^2)``.
    """

    gain = 5.0 / 3.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(_as_float(x))
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        return grad_out * (y.dtype.type(1.0) - y * y)


class _AxisActivation(ActivationLayer):
    """Shared ``axis`` (alias ``dim``) handling of Softmax and LogSoftmax."""

    def __init__(self, axis: int = -1, *, dim: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        owner = type(self).__name__
        if dim is not None:
            if axis != -1 and axis != dim:
                raise ConfigError(f"{owner}: got axis={axis!r} and dim={dim!r}; pass only one of them")
            axis = dim
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ConfigError(f"{owner}: axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def build(self, input_shape: Any) -> None:
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ShapeError(
                f"{self.describe()}: axis {self.axis} is out of range for input of shape "
                f"{format_shape(input_shape)} (rank {rank})"
            )
        super().build(input_shape)

    def _check_axis(self, x: np.ndarray) -> None:
        if not -x.ndim <= self.axis < x.ndim:
            raise ShapeError(
                f"{self.describe()}: axis {self.axis} is out of range for input of shape "
                f"{format_shape(x.shape)} (rank {x.ndim})"
            )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


class Softmax(_AxisActivation):
    """Softmax along ``axis``: ``y_i = exp(x_i - m) / sum_j exp(x_j - m)``, ``m = max_j x_j``.

    Subtracting the maximum leaves the result unchanged and keeps ``exp`` from
    overflowing.

    Args:
        axis: the axis that sums to 1 (default -1); ``dim`` is accepted as
            PyTorch's name for it.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dy_i/dx_j = y_i (delta_ij - y_j)``, so
        ``dL/dx = y * (g - sum(g * y, axis))`` with ``g = dL/dy``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        self._check_axis(x)
        e = np.exp(x - np.max(x, axis=self.axis, keepdims=True))
        self._y = e / np.sum(e, axis=self.axis, keepdims=True)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        return y * (grad_out - np.sum(grad_out * y, axis=self.axis, keepdims=True))


class LogSoftmax(_AxisActivation):
    """Log-softmax along ``axis``: ``y_i = x_i - m - log sum_j exp(x_j - m)``, ``m = max_j x_j``.

    Args:
        axis: the axis normalised over (default -1); ``dim`` is accepted too.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dy_i/dx_j = delta_ij - softmax(x)_j``, so
        ``dL/dx = g - softmax(x) * sum(g, axis)``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        self._check_axis(x)
        shifted = x - np.max(x, axis=self.axis, keepdims=True)
        log_sum = np.log(np.sum(np.exp(shifted), axis=self.axis, keepdims=True))
        y = shifted - log_sum
        self._softmax = np.exp(y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out - self._softmax * np.sum(grad_out, axis=self.axis, keepdims=True)


_GELU_MODES = ("none", "tanh")


class GELU(ActivationLayer):
    """Gaussian error linear unit (Hendrycks & Gimpel 2016): ``f(x) = x Phi(x)``.

    ``Phi`` is the standard normal CDF, computed exactly (to float64 rounding)
    from :func:`erfc` with ``approximate="none"``. With ``approximate="tanh"``,
    ``f(x) = x/2 (1 + tanh(u))``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``,
    evaluated as the identical ``x sigmoid(2u)``, which avoids the cancellation
    in ``1 + tanh(u)`` for negative ``x``.

    Args:
        approximate: ``"none"`` (default) or ``"tanh"``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        With ``f(x) = x c(x)``: ``f'(x) = c(x) + x c'(x)``. Exact:
        ``c = Phi``, ``c' = phi = exp(-x^2/2) / sqrt(2 pi)``. Tanh:
        ``c = s = sigmoid(2u)``, ``c' = 2 s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``.
    """

    _K = math.sqrt(2.0 / math.pi)
    _C = 0.044715

    def __init__(self, approximate: str = "none", *, name: str | None = None) -> None:
        super().__init__(name=name)
        if approximate not in _GELU_MODES:
            raise ConfigError(
                f"GELU: approximate must be one of {', '.join(_GELU_MODES)}, got {approximate!r}"
            )
        self.approximate = approximate

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        f = x.dtype.type
        self._x = x
        if self.approximate == "tanh":
            self._cdf = _stable_sigmoid(f(2.0 * self._K) * (x + f(self._C) * x * x * x))
        else:
            # Phi(x) = erfc(-x / sqrt 2) / 2; the by-product exp(-x^2 / 2) gives phi(x)
            tail, gaussian = _erfc_and_gaussian(x * f(-1.0 / _SQRT_2))
            self._cdf = f(0.5) * tail
            self._pdf = gaussian
            self._pdf *= f(_INV_SQRT_2PI)
        return x * self._cdf

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, s = self._x, self._cdf
        f = x.dtype.type
        if self.approximate == "tanh":
            du = f(2.0 * self._K) * (f(1.0) + f(3.0 * self._C) * x * x)
            dcdf = s * (f(1.0) - s) * du
        else:
            dcdf = self._pdf
        return grad_out * (s + x * dcdf)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "approximate": self.approximate}


class SiLU(ActivationLayer):
    """Sigmoid linear unit, or swish: ``f(x) = x sigmoid(x)``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``f'(x) = s + x s (1 - s) = s (1 + x (1 - s))``, ``s = sigmoid(x)``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        self._x = x
        self._s = _stable_sigmoid(x)
        return x * self._s

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        s = self._s
        one = s.dtype.type(1.0)
        return grad_out * (s * (one + self._x * (one - s)))


class Softplus(ActivationLayer):
    """Softplus: ``f(x) = log(1 + exp(beta x)) / beta``; linear where ``beta x > threshold``.

    Evaluated as ``(max(z, 0) + log1p(exp(-|z|))) / beta`` with ``z = beta x``,
    which never overflows.

    Args:
        beta: sharpness, ``> 0`` (default 1.0).
        threshold: above ``beta x > threshold`` the output is ``x`` (default 20.0).

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``f'(x) = sigmoid(beta x)``, and 1 in the linear region.
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.beta = _real("Softplus", "beta", beta)
        if self.beta <= 0:
            raise ConfigError(f"Softplus: beta must be > 0, got {beta!r}")
        self.threshold = _real("Softplus", "threshold", threshold)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _as_float(x)
        f = x.dtype.type
        z = x * f(self.beta)
        self._z = z
        self._linear = z > f(self.threshold)
        y = (np.maximum(z, f(0.0)) + np.log1p(np.exp(-np.abs(z)))) / f(self.beta)
        self._any_linear = bool(self._linear.any())
        if self._any_linear:
            y[self._linear] = x[self._linear]
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        slope = _stable_sigmoid(self._z)
        if self._any_linear:
            slope[self._linear] = 1.0
        return grad_out * slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta, "threshold": self.threshold}


@hookimpl
def register_activations(register: Any) -> None:
    register(IdentityActivation, name="identity", aliases=("linear",))
    register(ReLU, name="relu")
    register(LeakyReLU, name="leaky_relu")
    register(ELU, name="elu")
    register(Sigmoid, name="sigmoid")
    register(Tanh, name="tanh")
    register(Softmax, name="softmax")
    register(LogSoftmax, name="log_softmax")
    register(GELU, name="gelu")
    register(SiLU, name="silu", aliases=("swish",))
    register(Softplus, name="softplus")


@hookimpl
def register_layers(register: Any) -> None:
    register(ReLU)
    register(LeakyReLU)
    register(ELU)
    register(Sigmoid)
    register(Tanh)
    register(Softmax)
    register(LogSoftmax)
    register(GELU)
    register(SiLU)
    register(Softplus)
