"""Numerical gradients: central differences, relative error and :func:`check_gradients`.

``check_gradients(layer, x)`` compares a layer's hand-written ``backward``
against central finite differences of ``L = sum_k sum(y_k * R_k)`` over the
layer's outputs ``y_k`` (one, or several for a layer such as ``LSTMCell`` or
``LSTM(output="both")``) for fixed random ``R_k``, for the input(s) and every
parameter, in float64: entry by entry for an array of at most
:data:`MAX_ENTRIES` entries, along :data:`DIRECTIONS` random unit directions
through all its entries for a larger one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import DataError, ShapeError
from framework.runtime.random import thread_rng
from framework.testing import _structure as st
from framework.testing._common import backward_by_hand, forward_by_hand
from framework.testing.report import ConformanceError

__all__ = ["GradientReport", "numerical_gradient", "relative_error", "check_gradients"]

#: Rounding of one float64 evaluation of ``L``, relative to ``sum |y_k * R_k|``,
#: with room for the rounding inside the forward pass (see :func:`check_gradients`).
_ROUNDING = 1e-15


def relative_error(analytic: Any, numeric: Any, *, floor: float = 1e-12) -> float:
    """``||a - n|| / max(||a|| + ||n||, floor)``: 0 when equal, 1 when unrelated (or of opposite sign).

    Symmetric in its two arguments; two zero arrays give 0, a zero and a
    non-zero array give 1, NaN anywhere gives NaN (which no tolerance passes).

    Args:
        analytic, numeric: arrays of one shape (scalars allowed).
        floor: the smallest denominator: differences far below ``floor`` count
            as 0 (:func:`check_gradients` sets it from the finite differences'
            own rounding noise).

    Raises:
        ShapeError: when the shapes differ (broadcasting one against the other
            would hide a gradient of the wrong shape).
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ShapeError(
            f"relative_error: the arrays have different shapes, {a.shape} and {n.shape}; "
            "a gradient must have the shape of what it is the gradient of"
        )
    a, n = a.ravel(), n.ravel()
    denom = max(float(np.linalg.norm(a) + np.linalg.norm(n)), floor)
    if np.isnan(denom):
        return float("nan")
    return float(np.linalg.norm(a - n)) / denom


def numerical_gradient(
    f: Callable[[], float], array: np.ndarray, eps: float = 1e-6, entries: Any = None
) -> np.ndarray:
    """Central differences of scalar ``f()`` with respect to ``array``, perturbed in place.

    Each entry of ``array`` (any memory layout: a transposed or strided view
    is perturbed where it lives, so ``f`` sees it) is set to ``x + eps`` and
    ``x - eps`` in turn and restored, also when ``f`` raises. The difference
    is divided by the step actually stored (``x + eps`` rounds in float32),
    so the estimate keeps float64 accuracy, about ``1e-9`` relative for a
    smooth ``f`` computed in float64.

    Args:
        f: the scalar function; it reads ``array``.
        array: a writeable floating-point array.
        eps: the half step.
        entries: flat (row-major) indices of the entries to differentiate;
            ``None`` (default) for all. The others are left 0.

    Returns:
        ``dF/d array``, float64, of ``array``'s shape.

    Raises:
        DataError: for an integer, boolean or read-only array, or when ``f``
            returns something that is not one number.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"numerical_gradient: the array has dtype {array.dtype}; only a floating array can be "
            f"perturbed by eps={eps:g} (integer inputs such as indices have no gradient)"
        )
    if not array.flags.writeable:
        raise DataError(
            "numerical_gradient: the array is read-only; pass the array f reads, writeable, "
            "so that it can be perturbed in place"
        )
    grad = np.zeros(array.shape, dtype=np.float64)

    def value() -> float:
        out = f()
        if np.ndim(out) != 0:
            raise DataError(
                f"numerical_gradient: f() must return a scalar, got an array of shape {np.shape(out)}"
            )
        return float(out)

    # a C-contiguous array has a flat view; any other layout is walked by index where it lives
    flat = array.flags.c_contiguous
    target = array.reshape(-1) if flat else array
    out = grad.reshape(-1)  # grad is C-contiguous: a view
    chosen: Any = range(array.size) if entries is None else [int(k) for k in np.ravel(entries)]
    for k in chosen:
        i = k if flat else np.unravel_index(k, array.shape)
        old = target[i]
        try:
            target[i] = old + eps
            up = float(target[i])
            plus = value()
            target[i] = old - eps
            down = float(target[i])
            minus = value()
        finally:
            target[i] = old
        out[k] = (plus - minus) / (up - down)
    return grad


def _unit_directions(seed: int, count: int, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """``count`` random unit arrays of ``shape`` (Gaussian, normalised), drawn one at a time from ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        v = rng.standard_normal(shape)
        yield v / np.linalg.norm(v)


def _directional(
    f: Callable[[], float], array: np.ndarray, directions: Iterable[np.ndarray], analytic: Any, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``f()`` along each unit array of ``directions`` through ``array``.

    ``array`` is set to ``x + eps * v`` and ``x - eps * v`` for each direction
    ``v`` in turn and restored afterwards, also when ``f`` raises.

    Returns:
        ``(numeric, slope)``: per direction, ``(f(x + eps v) - f(x - eps v)) / 2 eps``
        and ``<analytic, displacement> / 2 eps`` for the displacement actually
        stored (``x + eps v`` rounds), so the two agree to float64 accuracy.
    """
    saved = array.copy()
    a = np.asarray(analytic, dtype=np.float64)
    numeric, slope = [], []
    try:
        for v in directions:
            np.copyto(array, saved + eps * v)
            up = array - saved
            plus = float(f())
            np.copyto(array, saved - eps * v)
            down = array - saved
            minus = float(f())
            numeric.append((plus - minus) / (2 * eps))
            slope.append(float(np.sum(a * (up - down))) / (2 * eps))
    finally:
        np.copyto(array, saved)
    return np.array(numeric), np.array(slope)


def _as_float64(x: Any) -> np.ndarray:
    """A float64 copy of ``x``; integer arrays (indices) are copied unchanged."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.copy()
    return np.array(x, dtype=np.float64)


#: An array of at most this many entries is checked entry by entry (two forwards per entry).
MAX_ENTRIES = 16

#: A larger array is checked along this many random unit directions through all its entries (two
#: forwards per direction), as PyTorch's fast gradcheck does with one: an error in any entry moves
#: the directional derivatives, and several directions measure the error's size as the entry-by-entry
#: comparison does (in expectation, the same relative error).
DIRECTIONS = 4


@dataclass
class GradientReport:
    """Relative errors per checked array (``"input"`` and parameter names).

    ``problems`` holds, per array, what made it fail outright (a gradient of
    the wrong shape); its error is then ``inf``. ``unexercised`` names the
    arrays whose gradient, analytic and numerical, is zero (below the
    differences' noise) for this input: their check passes whatever their
    backward computes, so another input (or state) should exercise them.
    ``sampled`` names the arrays larger than :data:`MAX_ENTRIES`, checked
    along :data:`DIRECTIONS` random unit directions through all their entries
    (their error is that of the directional derivatives).
    """

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-6
    problems: dict[str, str] = field(default_factory=dict)
    unexercised: list[str] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """``True`` when every relative error is below the tolerance."""
        return all(e < self.tolerance for e in self.errors.values())

    def __str__(self) -> str:
        lines = [f"{'array':<24} relative error (tolerance {self.tolerance:g})"]
        for name, err in self.errors.items():
            flag = "ok" if err < self.tolerance else "FAIL"
            note = f"  ({self.problems[name]})" if name in self.problems else ""
            lines.append(f"{name:<24} {err:.3e}  {flag}{note}")
        if self.sampled:
            lines.append(
                f"note: checked along {DIRECTIONS} random directions through all entries: "
                f"{', '.join(self.sampled)}"
            )
        if self.unexercised:
            lines.append(
                f"note: zero gradient for this input, so not really checked: {', '.join(self.unexercised)}"
            )
        return "\n".join(lines)


def _require_float64(layer: Layer) -> None:
    """Refuse a layer whose parameters are not float64: its finite differences would be rounding noise."""
    for name, p in layer.named_parameters():
        if p.data.dtype != np.float64:
            raise DataError(
                f"{layer.describe()}: check_gradients needs a float64 layer, but parameter {name!r} is "
                f"{p.data.dtype} (finite differences of a {p.data.dtype} forward are rounding noise at "
                "eps=1e-6); build the layer under framework.set_default_dtype('float64') or call "
                "layer.astype(numpy.float64) first"
            )


def _compare(report: GradientReport, name: str, analytic: Any, numeric: np.ndarray, floor: float) -> None:
    """Record the relative error of one array, or a shape mismatch as a failure."""
    if analytic is None or np.shape(analytic) != numeric.shape:
        got = "None" if analytic is None else st.fmt(tuple(np.shape(analytic)))
        report.errors[name] = float("inf")
        report.problems[name] = f"backward gave a gradient of shape {got}, expected {st.fmt(numeric.shape)}"
        return
    report.errors[name] = relative_error(analytic, numeric, floor=floor)
    if np.linalg.norm(np.ravel(analytic)) + np.linalg.norm(numeric) <= floor * report.tolerance:
        report.unexercised.append(name)


def check_gradients(
    layer: Layer,
    x: Any,
    *,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
    seed: int = 104729,
    check_input: bool = True,
    raise_on_failure: bool = True,
    random_stream: int | None = None,
) -> GradientReport:
    """Compare ``layer.backward`` to finite differences; input and every parameter.

    Run it on a layer built in float64 (``framework.set_default_dtype("float64")``
    before building) with float64 ``x``; ``x`` may be a list for merge layers.
    Integer inputs (indices) are not differentiated. A layer of several
    outputs (a tuple or list, possibly nested, such as ``LSTM``'s
    ``(output, (h_n, c_n))``) gets one random weight array per output, and
    its ``backward`` receives the gradients in the structure its ``forward``
    returned. The layer's mode (train / eval) is left as it is; every forward
    is given its own copy of ``x``, so a forward that writes into its input
    cannot disturb the differences (:func:`~framework.testing.check_layer`
    reports that separately).

    An array of at most :data:`MAX_ENTRIES` entries is differentiated entry by
    entry (two forwards per entry). A larger one is differentiated along
    :data:`DIRECTIONS` random unit directions ``v_i`` through all its entries
    (two forwards each, whatever its size): ``a`` and ``n`` below are then the
    vectors of directional derivatives ``<grad, v_i>``, analytic and numerical.
    An error in any entry moves them (a random direction is orthogonal to a
    given error with probability 0), and for independent Gaussian directions
    ``||a - n||`` and ``||a||`` estimate the entry-by-entry norms in the same
    proportion, so the relative error means the same; the report lists such
    arrays as ``sampled``.

    The relative error of each array is ``||a - n|| / (||a|| + ||n||)``, with
    the denominator at least the rounding noise of the differences divided by
    ``tolerance``: a parameter whose true gradient is zero (a bias followed by
    a normalisation) has a numerical gradient of pure noise, which is not an
    error; any difference above that noise still is. An array that fails is
    measured once more with step ``eps / 10`` (a kink within ``eps``, such as
    ReLU at 0, moves with the step; a wrong backward does not).

    ``random_stream``: when given, every forward runs with the framework's
    generator (:func:`framework.runtime.random.get_rng`) replaced by a fresh
    one of this seed, so a layer drawing its randomness from it (``Dropout``)
    draws the same mask in every forward and can be checked in training mode.

    Raises:
        ConformanceError: naming the layer and listing every array whose
            relative error exceeds ``tolerance`` (unless ``raise_on_failure=False``).
        DataError: when the layer's parameters are not float64.
    """
    xs = [_as_float64(v) for v in x] if isinstance(x, (list, tuple)) else None
    x_arr = None if xs is not None else _as_float64(x)
    inputs: Any = xs if xs is not None else x_arr

    def run() -> Any:
        if random_stream is None:
            return forward_by_hand(layer, inputs)
        with thread_rng(np.random.default_rng(random_stream)):
            return forward_by_hand(layer, inputs)

    out = run()
    _require_float64(layer)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(np.shape(o)) for o in st.leaves(out)]

    def loss() -> float:
        return float(sum(np.sum(o * w) for o, w in zip(st.leaves(run()), weights)))

    # rounding noise of one difference quotient (along an entry or a direction): that of L, over the step
    scale = float(
        sum(np.sum(np.abs(np.asarray(o, dtype=np.float64) * w)) for o, w in zip(st.leaves(out), weights))
    )

    def floor(array: np.ndarray, step: float) -> float:
        return max(_ROUNDING * scale / step * float(np.sqrt(array.size)) / tolerance, 1e-12)

    grad_out = st.rebuild(out, [w.astype(np.asarray(o).dtype) for w, o in zip(weights, st.leaves(out))])
    run()
    layer.zero_grad()
    grad_in = backward_by_hand(layer, grad_out)

    checked: list[tuple[str, Any, np.ndarray]] = []  # (name, analytic gradient, the array perturbed)
    if check_input:
        grads = list(grad_in) if isinstance(grad_in, (list, tuple)) else [grad_in]
        for i, xi in enumerate(xs if xs is not None else [x_arr]):
            if xi is not None and np.issubdtype(xi.dtype, np.floating):
                name = "input" if xs is None else f"input[{i}]"
                checked.append((name, grad_in if xs is None else (grads[i] if i < len(grads) else None), xi))
    checked += [(name, p.grad.copy(), p.data) for name, p in layer.named_parameters()]

    def measure(into: GradientReport, name: str, analytic: Any, array: np.ndarray, step: float) -> None:
        if analytic is None or np.shape(analytic) != array.shape:
            _compare(into, name, analytic, np.zeros(array.shape), floor(array, step))
        elif array.size <= MAX_ENTRIES:
            _compare(into, name, analytic, numerical_gradient(loss, array, step), floor(array, step))
        else:
            along = _unit_directions(seeds[name], DIRECTIONS, array.shape)
            numeric, slope = _directional(loss, array, along, analytic, step)
            _compare(into, name, slope, numeric, floor(numeric, step))
            if name not in into.sampled:
                into.sampled.append(name)

    # one seed per array, so the retry at eps / 10 below measures along the same directions
    rng_directions = np.random.default_rng(seed + 1)
    seeds = {name: int(rng_directions.integers(2**63)) for name, _, _ in checked}

    report = GradientReport(tolerance=tolerance)
    for name, analytic, array in checked:
        measure(report, name, analytic, array, eps)
        if not report.errors[name] < tolerance and name not in report.problems:
            # a kink (ReLU at 0, a max-pool tie) within eps of one entry spoils its difference; a
            # wrong backward stays wrong with a smaller step, a kink usually falls outside it
            retry = GradientReport(tolerance=tolerance)
            measure(retry, name, analytic, array, eps / 10)
            if retry.errors[name] < tolerance:
                report.errors[name] = retry.errors[name]
                report.problems[name] = (
                    f"passes with step eps/10: a non-differentiable point lies within {eps:g}"
                )
    if raise_on_failure and not report.ok:
        raise ConformanceError(f"{layer.describe()}: gradient check failed\n{report}")
    return report
