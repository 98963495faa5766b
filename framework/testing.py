"""Testing helpers for layer authors: finite-difference gradient checks.

``check_gradients(layer, x)`` compares a layer's hand-written ``backward``
against central finite differences of ``L = sum(forward(x) * R)`` for a fixed
random ``R``, for the input and for every parameter, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.errors import FrameworkError
from framework.layer import Layer

__all__ = [
    "ConformanceError",
    "GradientReport",
    "numerical_gradient",
    "relative_error",
    "check_gradients",
]


class ConformanceError(FrameworkError, AssertionError):
    """A layer (or other plugin object) failed a conformance check; the message is the report."""


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a|| + ||n||, 1e-12)``: 0 when equal, 1 when unrelated."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    denom = max(float(np.linalg.norm(a) + np.linalg.norm(n)), 1e-12)
    return float(np.linalg.norm(a - n)) / denom


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of scalar ``f()`` with respect to ``array`` (perturbed in place)."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat = array.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


@dataclass
class GradientReport:
    """Relative errors per checked array (``"input"`` and parameter names)."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-6

    @property
    def ok(self) -> bool:
        return all(e < self.tolerance for e in self.errors.values())

    def __str__(self) -> str:
        lines = [f"{'array':<24} relative error (tolerance {self.tolerance:g})"]
        for name, err in self.errors.items():
            flag = "ok" if err < self.tolerance else "FAIL"
            lines.append(f"{name:<24} {err:.3e}  {flag}")
        return "\n".join(lines)


def check_gradients(
    layer: Layer,
    x: Any,
    *,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
    seed: int = 104729,
    check_input: bool = True,
    raise_on_failure: bool = True,
) -> GradientReport:
    """Compare ``layer.backward`` to finite differences; input and every parameter.

    Run it on a layer built in float64 (``framework.set_default_dtype("float64")``
    before building) with float64 ``x``; ``x`` may be a list for merge layers.
    The layer's mode (train / eval) is left as it is.

    Raises:
        ConformanceError: listing every array whose relative error exceeds
            ``tolerance`` (unless ``raise_on_failure=False``).
    """
    xs = [np.array(v, dtype=np.float64) for v in x] if isinstance(x, (list, tuple)) else None
    x_arr = None if xs is not None else np.array(x, dtype=np.float64)
    inputs = xs if xs is not None else x_arr

    out = layer.forward(inputs)
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(out.shape)

    def loss() -> float:
        return float(np.sum(layer.forward(inputs) * weights))

    layer.forward(inputs)
    layer.zero_grad()
    grad_in = layer.backward(weights.astype(out.dtype))
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}

    report = GradientReport(tolerance=tolerance)
    if check_input:
        if xs is not None:
            for i, (xi, gi) in enumerate(zip(xs, grad_in)):
                report.errors[f"input[{i}]"] = relative_error(gi, numerical_gradient(loss, xi, eps))
        else:
            report.errors["input"] = relative_error(grad_in, numerical_gradient(loss, x_arr, eps))
    for name, p in layer.named_parameters():
        report.errors[name] = relative_error(analytic[name], numerical_gradient(loss, p.data, eps))
    if raise_on_failure and not report.ok:
        raise ConformanceError(f"{layer.describe()}: gradient check failed\n{report}")
    return report
