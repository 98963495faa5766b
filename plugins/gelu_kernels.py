"""Exact GELU's compiled kernel (the ``[jit]`` extra): ``x Phi(x)`` and its slope in one pass, float32.

NumPy's float32 path (:func:`plugins.activation_math.gelu_and_slope`) makes
about twenty passes over each block, one of them a table lookup; here each
value is done in registers, in float64, and rounded once. With
``a = |x|``, ``t = a / sqrt 2`` and ``u = (t - k) / (t + k)`` (``k = 3``, the
same change of variable as the NumPy path):

- ``h = erfc(t) / 2 = E(u) exp(-t^2)``, where ``E(u) = erfcx(t) / 2`` is
  smooth on ``[-1, 1]``: a Chebyshev series of degree 16 (``ERFCX_CHEB``,
  fitted in float64 to the NumPy path's reference erfcx at 4000 Chebyshev
  nodes; relative error below 1e-11 wherever float32's ``erfc`` is not 0,
  ``t <= 10.5``), turned into powers of ``u`` and summed by Horner's rule;
- ``exp(-t^2)`` as ``2^m p(r)``, ``-t^2 = m ln 2 + r``, ``|r| <= ln 2 / 2``,
  ``p`` the degree-11 Taylor polynomial (truncation error below 1e-14) and
  ``2^m`` a product of the powers ``2^(-2^b)`` selected by ``-m``'s bits:
  no table, no library call, so the loop vectorises;
- ``Phi(x) = h`` for ``x < 0`` and ``1 - h`` otherwise, ``y = x Phi(x)``,
  slope ``Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi)``.

Past ``|x| = 14.8`` the Gaussian is 0 (float32's ``exp`` underflows there too),
so ``+inf`` gives ``y = inf`` and ``-inf`` or NaN give NaN, and the slope at
``+-inf`` is NaN, as on NumPy's path. Measured on 4096 x 512 values: see
``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled

__all__ = ["ERFCX_CHEB", "TAYLOR", "gelu_and_slope"]

#: Chebyshev coefficients of ``E(u) = erfcx(3 (1 + u) / (1 - u)) / 2`` on ``[-1, 1]`` (degree 16)
ERFCX_CHEB = (
    0.1649313873765183,
    -0.226830760268901,
    0.08019917041078153,
    -0.022454060575561423,
    0.00482071432534787,
    -0.000721254038872143,
    5.0497183676853927e-05,
    6.04251226727544e-06,
    -1.8127103014266397e-06,
    3.59340537235657e-08,
    4.45711792998006e-08,
    -3.7107832973707817e-09,
    -1.19466827409081e-09,
    1.5311172507786236e-10,
    3.894468865240123e-11,
    -5.486869012242743e-12,
    -1.545819665404075e-12,
)
#: the same polynomial in powers of ``u`` (Horner's rule: one product-sum a term; coefficients below 0.17)
ERFCX_POLY = tuple(float(v) for v in np.polynomial.chebyshev.cheb2poly(ERFCX_CHEB))
#: ``k`` of ``u = (t - k) / (t + k)``
ERFCX_K = 3.0
#: below this exponent ``exp`` is 0 in float32 (``exp(-110) ~ 1.7e-48``)
FLOOR = -110.0


#: ``1 / i!`` for ``i = 0 .. 11``: the Taylor polynomial of ``exp`` on ``|r| <= ln 2 / 2``
TAYLOR = tuple(1.0 / math.factorial(i) for i in range(12))
_LOG2E, _LN2_HI, _LN2_LO = 1.0 / math.log(2.0), 0.6931471803691238, 1.9082149292705877e-10
_INV_SQRT2, _INV_SQRT_2PI = 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0 * math.pi)


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True, fastmath={"contract", "nsz"}, error_model="numpy")
    # The sums are written out term by term: a loop over a tuple indexes it at run time, and the
    # loop over the values no longer vectorises (measured: several times slower than NumPy).
    a, c, k = TAYLOR, ERFCX_POLY, ERFCX_K

    @numba.njit(inline="always", fastmath={"contract", "nsz"}, error_model="numpy")
    def value_and_slope(v: float) -> tuple[float, float]:
        t = abs(v) * _INV_SQRT2
        z = -t * t
        inside = z > FLOOR  # False for NaN too: the exponent below stays finite
        z = z if inside else FLOOR
        m = np.floor(z * _LOG2E + 0.5)  # z = m ln2 + r
        r = (z - m * _LN2_HI) - m * _LN2_LO
        p = ((((a[11] * r + a[10]) * r + a[9]) * r + a[8]) * r + a[7]) * r + a[6]
        p = (((((p * r + a[5]) * r + a[4]) * r + a[3]) * r + a[2]) * r + a[1]) * r + a[0]
        n = np.int64(-m)  # 0 .. 159: 2^m from its bits
        p *= 0.5 if n & 1 else 1.0
        p *= 0.25 if n & 2 else 1.0
        p *= 2.0**-4 if n & 4 else 1.0
        p *= 2.0**-8 if n & 8 else 1.0
        p *= 2.0**-16 if n & 16 else 1.0
        p *= 2.0**-32 if n & 32 else 1.0
        p *= 2.0**-64 if n & 64 else 1.0
        p *= 2.0**-128 if n & 128 else 1.0
        gaussian = p if inside else 0.0  # exp(-x^2 / 2)
        u = 1.0 - 2.0 * k / (t + k)
        e = ((((c[16] * u + c[15]) * u + c[14]) * u + c[13]) * u + c[12]) * u + c[11]
        e = ((((e * u + c[10]) * u + c[9]) * u + c[8]) * u + c[7]) * u + c[6]
        e = ((((e * u + c[5]) * u + c[4]) * u + c[3]) * u + c[2]) * u + c[1]
        h = (e * u + c[0]) * gaussian  # erfc(t) / 2, the CDF at -|x|
        cdf = h if v < 0.0 else 1.0 - h
        return v * cdf, cdf + v * gaussian * _INV_SQRT_2PI

    @jit
    def gelu(x: Any, y: Any, slope: Any, with_slope: bool) -> None:
        # two loops, so that neither holds a branch: a conditional store keeps a loop from vectorising
        if with_slope:
            for i in range(x.size):
                y[i], slope[i] = value_and_slope(np.float64(x[i]))
        else:
            for i in range(x.size):
                y[i] = value_and_slope(np.float64(x[i]))[0]

    return {"gelu": gelu}


def gelu_and_slope(x: np.ndarray, slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x Phi(x), Phi(x) + x phi(x))`` of a C-contiguous float32 ``x`` (the slope ``None`` unless asked)."""
    y = np.empty_like(x)
    d = np.empty_like(x) if slope else np.empty(0, x.dtype)
    _kernels()["gelu"](x.reshape(-1), y.reshape(-1), d.reshape(-1), slope)
    return y, d if slope else None
