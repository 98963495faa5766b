"""The element-wise built-in activations: Identity, ReLU, LeakyReLU, ELU, Sigmoid, Tanh, GELU, SiLU, Softplus.

Each is a parameter-free :class:`~framework.base.layer.Layer` in the context
form: ``forward(ctx, x)`` keeps on the per-call context ``ctx`` what
``backward(ctx, grad_out)`` needs, never on the layer, so one instance may
serve several places of a graph and several threads. When ``ctx.record`` is
``False`` (``predict``: no backward follows) a layer skips what only the
backward would read. Registration happens in :mod:`plugins.activations`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.validation import real_number
from framework.errors import ConfigError
from plugins.activation_math import (
    as_float,
    gelu_and_slope,
    stable_sigmoid,
    zeros_like_cached,
)

__all__ = [
    "ActivationLayer",
    "IdentityActivation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "SiLU",
    "Softplus",
]


class ActivationLayer(Layer):
    """Base of the built-in activations: parameter-free, any input shape.

    Subclasses write ``forward(ctx, x)`` (storing on ``ctx`` what ``backward``
    needs) and ``backward(ctx, grad_out)``.

    Attributes:
        gain: the init gain of the nonlinearity (1 unless overridden), which a
            preceding layer passes to its weight initializer.
        link: the name of the output link this activation is, read by
            ``Model.compile`` to check the loss pairing (``"softmax"``,
            ``"sigmoid"``, ``"log_softmax"``), ``None`` for the others.
    """

    gain: ClassVar[float] = 1.0
    link: ClassVar[str | None] = None

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

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return as_float(x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out


class ReLU(ActivationLayer):
    """Rectified linear unit: ``f(x) = max(x, 0)``. Gain ``sqrt(2)``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy * [x > 0]`` (0 at the kink ``x = 0``, as PyTorch);
        the mask is the only array kept for backward, and ``grad_out`` is
        multiplied in place when ``ctx.grad_out_writable``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import ReLU
        >>> ReLU()(np.array([[-1.0, 2.0]]))
        array([[0., 2.]])
    """

    gain = math.sqrt(2.0)
    monotone_elementwise = True
    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        if ctx.record:
            ctx.mask = x > 0
        return np.maximum(x, zeros_like_cached(x))

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        if ctx.grad_out_writable and grad_out.dtype.kind == "f":
            return np.multiply(grad_out, ctx.mask, out=grad_out)
        return grad_out * ctx.mask


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

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def __init__(self, negative_slope: float = 0.01, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.negative_slope = real_number("LeakyReLU", "negative_slope", negative_slope)

    @property
    def gain(self) -> float:  # type: ignore[override]
        return math.sqrt(2.0 / (1.0 + self.negative_slope**2))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        mask = x > 0
        # the local slope: exactly 1 where x > 0, exactly negative_slope elsewhere
        slope = ctx.slope = mask + ~mask * x.dtype.type(self.negative_slope)
        return x * slope

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * ctx.slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(ActivationLayer):
    """Exponential linear unit: ``f(x) = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise.

    Args:
        alpha: scale of the negative saturation (default 1.0).

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``dL/dx = dL/dy * (1 if x > 0 else alpha exp(x))``. The slope is
        ``alpha exp(x)`` itself, not the equal ``f(x) + alpha``, which
        cancels to 0 for ``x`` below about -17 (float32) or -37 (float64).
    """

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def __init__(self, alpha: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.alpha = real_number("ELU", "alpha", alpha)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        alpha = x.dtype.type(self.alpha)
        zero = x.dtype.type(0.0)
        ctx.mask = x > 0
        below = ctx.below = np.minimum(x, zero)
        # alpha (exp(x) - 1), exactly 0 for x >= 0, so the sum selects per branch
        return np.maximum(x, zero) + alpha * np.expm1(below)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        mask, below = ctx.mask, ctx.below
        slope = mask + ~mask * (below.dtype.type(self.alpha) * np.exp(below))
        return grad_out * slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha}


class Sigmoid(ActivationLayer):
    """Logistic sigmoid: ``f(x) = 1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    ``link = "sigmoid"``: a model ending in it pairs with a loss expecting
    sigmoid probabilities (``binary_crossentropy``).

    Shape:
        - Input: ``(N, *)``; Output: the same, in ``(0, 1)``.

    Gradient:
        ``dL/dx = dL/dy * y (1 - y)``.
    """

    link = "sigmoid"
    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        y = ctx.y = stable_sigmoid(as_float(x))
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        y = ctx.y
        return grad_out * (y * (y.dtype.type(1.0) - y))


class Tanh(ActivationLayer):
    """Hyperbolic tangent: ``f(x) = tanh(x)``. Gain ``5/3``.

    Shape:
        - Input: ``(N, *)``; Output: the same, in ``(-1, 1)``.

    Gradient:
        ``dL/dx = dL/dy * (1 - y^2)``.
    """

    gain = 5.0 / 3.0
    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        y = ctx.y = np.tanh(as_float(x))
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        y = ctx.y
        return grad_out * (y.dtype.type(1.0) - y * y)


_GELU_MODES = ("none", "tanh")


class GELU(ActivationLayer):
    """Gaussian error linear unit (Hendrycks & Gimpel 2016): ``f(x) = x Phi(x)``.

    ``Phi`` is the standard normal CDF, computed exactly (to float64 rounding)
    from :func:`~plugins.activation_math.erfc` with ``approximate="none"``.
    With ``approximate="tanh"``, ``f(x) = x/2 (1 + tanh(u))``,
    ``u = sqrt(2/pi) (x + 0.044715 x^3)``, evaluated as the identical
    ``x sigmoid(2u)``, which avoids the cancellation in ``1 + tanh(u)`` for
    negative ``x``.

    Args:
        approximate: ``"none"`` (default) or ``"tanh"``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        With ``f(x) = x c(x)``: ``f'(x) = c(x) + x c'(x)``. Exact:
        ``c = Phi``, ``c' = phi = exp(-x^2/2) / sqrt(2 pi)``. Tanh:
        ``c = s = sigmoid(2u)``, ``c' = 2 s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``;
        ``u`` and ``c'`` are evaluated at ``x`` clipped to ``[-30, 30]``, where ``s`` is
        already exactly 0 or 1, so a large finite ``x`` (``x^3`` overflowing
        float32 past ``|x| ~ 7e12``) gives the slope 0 or 1, not NaN.
    """

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    _K = math.sqrt(2.0 / math.pi)
    _C = 0.044715
    _SATURATED = 30.0

    def __init__(self, approximate: str = "none", *, name: str | None = None) -> None:
        super().__init__(name=name)
        if approximate not in _GELU_MODES:
            raise ConfigError(
                f"GELU: approximate must be one of {', '.join(_GELU_MODES)}, got {approximate!r}"
            )
        self.approximate = approximate

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        f = x.dtype.type
        if self.approximate == "tanh":
            # sigmoid(2u) is exactly 0 or 1 past |x| = 30 in every float dtype (2|u| > 1900),
            # so clipping there changes nothing but keeps x^3 (and backward's x^2) finite
            xc = ctx.x = np.clip(x, f(-self._SATURATED), f(self._SATURATED))
            cdf = ctx.cdf = stable_sigmoid(f(2.0 * self._K) * (xc + f(self._C) * xc * xc * xc))
            return x * cdf
        # f'(x) = Phi(x) + x phi(x) is computed with f(x), while Phi is at hand
        y, ctx.slope = gelu_and_slope(x, slope=ctx.record)
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        if self.approximate != "tanh":
            return grad_out * ctx.slope
        x, s = ctx.x, ctx.cdf
        f = x.dtype.type
        du = f(2.0 * self._K) * (f(1.0) + f(3.0 * self._C) * x * x)
        return grad_out * (s + x * (s * (f(1.0) - s) * du))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "approximate": self.approximate}


class SiLU(ActivationLayer):
    """Sigmoid linear unit, or swish: ``f(x) = x sigmoid(x)``.

    Shape:
        - Input: ``(N, *)``; Output: the same.

    Gradient:
        ``f'(x) = s + x s (1 - s) = s (1 + x (1 - s))``, ``s = sigmoid(x)``.
    """

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = ctx.x = as_float(x)
        s = ctx.s = stable_sigmoid(x)
        return x * s

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        s = ctx.s
        one = s.dtype.type(1.0)
        return grad_out * (s * (one + ctx.x * (one - s)))


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
        ``f'(x) = sigmoid(beta x)``, and 1 in the linear region (the boolean
        mask ``ctx.linear`` of the forward call).
    """

    channelwise = True  # element-wise: any layout (framework.models.layouts)

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.beta = real_number("Softplus", "beta", beta)
        if self.beta <= 0:
            raise ConfigError(f"Softplus: beta must be > 0, got {beta!r}")
        self.threshold = real_number("Softplus", "threshold", threshold)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        x = as_float(x)
        f = x.dtype.type
        with np.errstate(over="ignore"):  # beta x past the float range: inf, in the linear region
            z = ctx.z = x * f(self.beta)
        linear = ctx.linear = z > f(self.threshold)
        y = (np.maximum(z, f(0.0)) + np.log1p(np.exp(-np.abs(z)))) / f(self.beta)
        ctx.any_linear = bool(linear.any())
        if ctx.any_linear:
            y[linear] = x[linear]
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        slope = stable_sigmoid(ctx.z)
        if ctx.any_linear:
            slope[ctx.linear] = 1.0
        return grad_out * slope

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta, "threshold": self.threshold}
