"""Exact GELU's compiled kernel (:mod:`plugins.gelu_kernels`) against float64 and the NumPy path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framework.layers import GELU
from framework.runtime import jit
from plugins import activation_math, gelu_kernels
from plugins.activation_math import gelu_and_slope
from tests.support import requires_numba, requires_torch, spy_on

ULP = float(np.finfo(np.float32).eps)  # 2^-23
TINY = float(np.finfo(np.float32).tiny)


def _reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x Phi(x)`` and ``Phi(x) + x phi(x)`` in float64 from ``math.erfc`` (about 1e-16 relative)."""
    v = x.astype(np.float64).ravel()
    cdf = np.array([0.5 * math.erfc(-a / math.sqrt(2.0)) for a in v])
    gaussian = np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    return (v * cdf).reshape(x.shape), (cdf + v * gaussian).reshape(x.shape)


def _values() -> np.ndarray:
    """Every regime in float32: the centre, both tails to where the output underflows, tiny and huge."""
    rng = np.random.default_rng(0)
    grid = np.linspace(-15.0, 15.0, 30001)
    spread = rng.standard_normal(20000) * 4
    tiny = np.array([1e-30, -1e-30, 1e-38, -1e-38, 1e-44, -1e-44])
    return np.concatenate([grid, spread, tiny, [0.0, -0.0]]).astype(np.float32)


def _compiled(x: np.ndarray, slope: bool = True):
    with jit.using(True):
        return gelu_and_slope(x, slope)


def _numpy(x: np.ndarray, slope: bool = True):
    with jit.using(False):
        return gelu_and_slope(x, slope)


def test_the_chebyshev_coefficients_are_erfcx_to_1e_11() -> None:
    # the kernel's series, summed in float64, against the NumPy path's own erfcx reference
    u = np.linspace(-1.0, 0.55, 2001)  # t = 3 (1 + u) / (1 - u) <= 10.3: where float32's erfc is not 0
    series = np.polynomial.chebyshev.chebval(u, gelu_kernels.ERFCX_CHEB)
    t = gelu_kernels.ERFCX_K * (1.0 + u) / (1.0 - u)
    exact = np.array([0.5 * activation_math._erfcx_reference(v) for v in t])
    assert np.max(np.abs(series - exact) / exact) < 1e-11


@requires_numba
def test_compiled_gelu_is_within_a_few_float32_ulps_of_float64_and_beats_the_numpy_path() -> None:
    x = _values()
    want_y, want_d = _reference(x)
    (y, d), (ny, nd) = _compiled(x), _numpy(x)
    normal = np.abs(want_y) > TINY  # below it the output is subnormal: absolute errors of 1e-45

    def relative(got: np.ndarray) -> float:
        return float(np.max(np.abs(got[normal] - want_y[normal]) / np.abs(want_y[normal])))

    assert relative(y) <= 1.5 * ULP, relative(y)
    assert np.max(np.abs(y[~normal] - want_y[~normal])) <= 2 * float(np.finfo(np.float32).smallest_subnormal)
    assert relative(y) < relative(
        ny
    )  # the NumPy path loses ~x^2 ulps in the left tail (exp of a rounded x^2)
    assert np.max(np.abs(d - want_d)) <= ULP
    assert np.max(np.abs(d - want_d)) <= np.max(np.abs(nd - want_d))


@requires_numba
def test_compiled_gelu_treats_zeros_infinities_and_nan_as_the_numpy_path() -> None:
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 14.0, -14.0, 15.0, -15.0, 1e30, -1e30, 3.4e38, -3.4e38],
        dtype=np.float32,
    )
    with np.errstate(all="ignore"):
        y, d = _compiled(special)
        ny, nd = _numpy(special)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ny))
    np.testing.assert_array_equal(np.isnan(d), np.isnan(nd))
    np.testing.assert_allclose(y, ny, rtol=1e-5, atol=1e-42)  # -14: subnormal outputs, a few ulps apart
    np.testing.assert_allclose(d, nd, rtol=1e-5, atol=1e-41)
    assert y[2] == np.inf and np.isnan(y[3]) and np.isnan(y[4])  # +inf stays, -inf * 0 and NaN are NaN


@requires_numba
def test_fortran_ordered_input_keeps_its_layout_and_values(monkeypatch) -> None:
    calls = spy_on(monkeypatch, gelu_kernels, ("gelu_and_slope",))
    x = np.asfortranarray(np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32))
    y, d = _compiled(x)
    c_y, c_d = _compiled(np.ascontiguousarray(x))
    assert calls == ["gelu_and_slope", "gelu_and_slope"]
    assert y.flags.f_contiguous and d.flags.f_contiguous
    np.testing.assert_array_equal(y, c_y)
    np.testing.assert_array_equal(d, c_d)


@requires_numba
def test_only_float32_with_kernels_on_runs_the_kernel(monkeypatch) -> None:
    calls = spy_on(monkeypatch, gelu_kernels, ("gelu_and_slope",))
    x = np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32)
    _numpy(x)
    _compiled(x.astype(np.float64))
    _compiled(np.empty((0, 3), np.float32))
    assert calls == []
    y, slope = _compiled(x, slope=False)
    assert calls == ["gelu_and_slope"] and slope is None
    np.testing.assert_allclose(y, _numpy(x)[0], rtol=4 * ULP, atol=1e-30)
    # a strided view is copied, not sent to NumPy's path: the values do not depend on the layout
    strided, _ = _compiled(x[:, ::2])
    assert calls == ["gelu_and_slope"] * 2
    np.testing.assert_array_equal(strided, _compiled(np.ascontiguousarray(x[:, ::2]))[0])


@requires_numba
@pytest.mark.parametrize("training", [True, False])
def test_the_gelu_layer_on_either_engine(training: bool) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 32)) * 3).astype(np.float32)
    g = rng.standard_normal((16, 32)).astype(np.float32)
    results = []
    for engine in (False, True):
        with jit.using(engine):
            layer = GELU()
            y = layer(x, training=training)
            results.append((y, layer.backward(g) if training else None))
    # the NumPy path's left tail is off by ~x^2 ulps (1.2e-6 at x = -7), the kernel's by one
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-30)
    if training:
        np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-7)


@requires_numba
@requires_torch
def test_the_gelu_layer_on_the_kernel_matches_pytorch() -> None:
    import torch

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((64, 48)) * 3).astype(np.float32)
    g = rng.standard_normal((64, 48)).astype(np.float32)
    with jit.using(True):
        layer = GELU()
        y = layer(x, training=True)
        dx = layer.backward(g)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = torch.nn.functional.gelu(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
