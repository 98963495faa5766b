"""Numerical gradients: central differences, relative error and :func:`check_gradients`.

``check_gradients(layer, x)`` compares a layer's hand-written ``backward``
against central finite differences of ``L = sum_k sum(y_k * R_k)`` over the
layer's outputs ``y_k`` (one, or several for a layer such as ``LSTMCell`` or
``LSTM(output="both")``) for fixed random ``R_k``, for the input(s) and every
parameter, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.testing import _structure as st
from framework.testing._common import backward_by_hand, forward_by_hand
from framework.testing.report import ConformanceError

__all__ = ["GradientReport", "numerical_gradient", "relative_error", "check_gradients"]


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


def _as_float64(x: Any) -> np.ndarray:
    """A float64 copy of ``x``; integer arrays (indices) are copied unchanged."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.copy()
    return np.array(x, dtype=np.float64)


@dataclass
class GradientReport:
    """Relative errors per checked array (``"input"`` and parameter names)."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-6

    @property
    def ok(self) -> bool:
        """``True`` when every relative error is below the tolerance."""
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
    A layer of several outputs (a tuple or list, possibly nested, such as
    ``LSTM``'s ``(output, (h_n, c_n))``) gets one random weight array per
    output, and its ``backward`` receives the gradients in the structure its
    ``forward`` returned. The layer's mode (train / eval) is left as it is.

    Raises:
        ConformanceError: naming the layer and listing every array whose
            relative error exceeds ``tolerance`` (unless ``raise_on_failure=False``).
    """
    xs = [_as_float64(v) for v in x] if isinstance(x, (list, tuple)) else None
    x_arr = None if xs is not None else _as_float64(x)
    inputs = xs if xs is not None else x_arr

    out = forward_by_hand(layer, inputs)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(np.shape(o)) for o in st.leaves(out)]

    def loss() -> float:
        outputs = st.leaves(forward_by_hand(layer, inputs))
        return float(sum(np.sum(o * w) for o, w in zip(outputs, weights)))

    grad_out = st.rebuild(out, [w.astype(np.asarray(o).dtype) for w, o in zip(weights, st.leaves(out))])

    forward_by_hand(layer, inputs)
    layer.zero_grad()
    grad_in = backward_by_hand(layer, grad_out)
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}

    report = GradientReport(tolerance=tolerance)
    if check_input:
        if xs is not None:
            for i, (xi, gi) in enumerate(zip(xs, grad_in)):
                report.errors[f"input[{i}]"] = relative_error(gi, numerical_gradient(loss, xi, eps))
        else:
            assert x_arr is not None  # xs is None exactly when x is a single array
            report.errors["input"] = relative_error(grad_in, numerical_gradient(loss, x_arr, eps))
    for name, p in layer.named_parameters():
        report.errors[name] = relative_error(analytic[name], numerical_gradient(loss, p.data, eps))
    if raise_on_failure and not report.ok:
        raise ConformanceError(f"{layer.describe()}: gradient check failed\n{report}")
    return report
