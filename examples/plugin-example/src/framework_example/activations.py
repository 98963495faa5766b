"""Mish: ``x * tanh(softplus(x))`` (Misra 2019)."""

from __future__ import annotations

import numpy as np

from framework import Layer

__all__ = ["Mish"]


class Mish(Layer):
    """Self-regularised smooth activation: ``mish(x) = x * tanh(softplus(x))``.

    ``softplus(x) = log(1 + e^x)`` is computed as ``logaddexp(0, x)``, so large
    ``|x|`` neither overflows nor loses precision. Parameter-free; keeps the
    input's dtype.

    Shape:
        - Input: any ``(N, *)``; Output: the same.

    Gradient:
        With ``s = softplus(x)``, ``t = tanh(s)`` and ``ds/dx = sigmoid(x)``:
        ``dmish/dx = t + x * (1 - t^2) * sigmoid(x)``, so
        ``dL/dx = dL/dy * (t + x (1 - t^2) sigmoid(x))``.

    Attributes:
        gain: ``1.0``, the init gain a preceding layer passes to its weight
            initializer (mish is close to the identity for positive inputs).
    """

    gain = 1.0

    def build(self, input_shape: object) -> None:
        super().build(input_shape)
        self.input_spec = None  # elementwise: any shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        self._t = np.tanh(np.logaddexp(0, x))
        return x * self._t

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, t = self._x, self._t
        sigmoid = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
        return grad_out * (t + x * (1.0 - t * t) * sigmoid)
