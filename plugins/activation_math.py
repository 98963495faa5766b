"""The numerics behind the built-in activations: erfc, the normal CDF, a stable sigmoid.

Pure functions on NumPy arrays, no layers: :func:`erfc` and :func:`normal_cdf`
(exact GELU), :func:`stable_sigmoid` (Sigmoid, SiLU, Softplus, tanh-GELU), and
the small helpers the activation layers share (dtype promotion, a cached
array of zeros for ReLU, validation of real-valued arguments).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime import jit
from framework.runtime.dtype import get_default_dtype
from framework.runtime.threads import current_member
from plugins import gelu_kernels

__all__ = [
    "erfc",
    "erfc_and_gaussian",
    "normal_cdf",
    "normal_cdf_and_gaussian",
    "gelu_and_slope",
    "stable_sigmoid",
    "as_float",
    "zeros_like_cached",
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


#: Values per block of :func:`erfc_and_gaussian`: its ~40 element-wise passes then run
#: on arrays that stay in the CPU cache (2x faster on a (4096, 512) float32 array).
_BLOCK = 32768
#: The block in a shard's thread under ``fit(threads=K)``: every NumPy call takes the GIL
#: back from the other shards' threads, which costs more than the cache misses of larger
#: blocks (float32 GELU of two 2048x512 halves on two threads: 15.6 ms at 32768, 9.0 here).
_SHARD_BLOCK = 131072


def _block_size() -> int:
    return _BLOCK if current_member() is None else _SHARD_BLOCK


def erfc_and_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(erfc(x), exp(-x^2))``, the second being a by-product GELU's backward reuses."""
    if x.size <= 2 * _block_size():
        return _erfc_and_gaussian(x)
    tail, gaussian = _blockwise(x, 2, _fill_erfc_and_gaussian)
    return tail, gaussian


def _fill_erfc_and_gaussian(x: np.ndarray, tail: np.ndarray, gaussian: np.ndarray) -> None:
    tail[...], gaussian[...] = _erfc_and_gaussian(x)


def _blockwise(x: np.ndarray, outputs: int, fill: Callable[..., None]) -> tuple[np.ndarray, ...]:
    """``outputs`` arrays shaped like ``x``, filled by ``fill(x_block, *out_blocks)`` block by block.

    Each block of :func:`_block_size` values is worked on while it is in the
    CPU cache. Fortran-ordered input (Linear's transposed output) keeps its layout.
    """
    if not x.flags.c_contiguous and x.flags.f_contiguous:
        return tuple(a.T for a in _blockwise(x.T, outputs, fill))
    flat = np.ascontiguousarray(x).reshape(-1)
    outs = [np.empty_like(flat) for _ in range(outputs)]
    size = _block_size()
    for start in range(0, flat.size, size):
        block = slice(start, start + size)
        fill(flat[block], *(out[block] for out in outs))
    return tuple(out.reshape(x.shape) for out in outs)


def _erfc_and_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


# -- the normal CDF in float32: a table of erfcx ---------------------------------
#
# In float32 the ~40 passes of the Chebyshev sum are the cost of exact GELU.
# The float32 path instead looks erfcx up: E(u) = erfcx(t) / 2 on the same
# u = (t - k) / (t + k) as above, tabulated at 8193 points of [-1, 1] (64 kB,
# cache-resident) and interpolated linearly. E is smooth in u, so the
# interpolation error is below 3e-8 relative wherever erfc is not 0 in
# float32 (t <= 10), under float32's rounding; the table is computed once, in
# float64, from math.erfc. About 20 passes per value instead of 45.

_TABLE_SIZE = 8192


@functools.cache
def _erfcx_table() -> tuple[np.ndarray, np.ndarray]:
    """``(E, dE)`` in float32: ``E[i] = erfcx(t(u_i)) / 2`` at ``u_i = 2i/n - 1``, and its differences."""
    n = _TABLE_SIZE
    u = np.linspace(-1.0, 1.0, n + 1)
    values = [0.5 * _erfcx_reference(_ERFCX_K * (1.0 + v) / (1.0 - v)) for v in u[:-1]] + [0.0]
    e = np.array([*values, 0.0])  # one more 0: an index of n (t = inf) reads a zero slope
    return e.astype(np.float32), np.append(np.diff(e), 0.0).astype(np.float32)


def normal_cdf_and_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Phi(x), exp(-x^2 / 2))`` elementwise: exact GELU's CDF and, for its backward, the Gaussian.

    Float32 input is evaluated in float32 from a table of erfcx (relative
    error of ``Phi`` about 1e-7 where ``x^2`` is small, growing like
    ``x^2`` times float32's rounding in the left tail, as ``exp`` of a
    rounded ``-x^2 / 2`` does); other dtypes through :func:`erfc_and_gaussian`.
    """
    if x.dtype != np.float32:
        tail, gaussian = erfc_and_gaussian(x * x.dtype.type(-1.0 / _SQRT_2))
        tail *= x.dtype.type(0.5)
        return tail, gaussian
    scratch = _Scratch32(min(_block_size(), x.size))

    def fill(xb: np.ndarray, cdf: np.ndarray, gaussian: np.ndarray) -> None:
        _normal_cdf32(xb, cdf, gaussian, scratch.view(xb.size)[2:])

    with np.errstate(over="ignore", under="ignore"):  # see _normal_cdf32
        cdf, gaussian = _blockwise(x, 2, fill)
    return cdf, gaussian


def gelu_and_slope(x: np.ndarray, slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact GELU ``x Phi(x)`` and, if ``slope``, its derivative ``Phi(x) + x phi(x)``.

    Float32 runs the compiled kernel (:mod:`plugins.gelu_kernels`, one pass,
    in float64 inside) when :func:`framework.runtime.jit.takes` the array;
    else block by block, each block's CDF, product and slope while it is in
    the CPU cache. Other dtypes go through :func:`normal_cdf_and_gaussian`.
    Fortran-ordered input (Linear's transposed output) keeps its layout.
    """
    compiled = _gelu_kernel(x, slope)
    if compiled is not None:
        return compiled
    if x.dtype != np.float32:
        cdf, gaussian = normal_cdf_and_gaussian(x)
        y = x * cdf
        if not slope:
            return y, None
        gaussian *= x.dtype.type(_INV_SQRT_2PI)
        gaussian *= x
        gaussian += cdf
        return y, gaussian
    scratch = _Scratch32(min(_block_size(), x.size))

    def fill(xb: np.ndarray, y: np.ndarray, d: np.ndarray | None = None) -> None:
        _gelu32(xb, y, d, scratch.view(xb.size))

    with np.errstate(over="ignore", under="ignore"):  # see _normal_cdf32
        outs = _blockwise(x, 2 if slope else 1, fill)
    return outs[0], outs[1] if slope else None


def _gelu_kernel(x: np.ndarray, slope: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
    """:mod:`plugins.gelu_kernels` on a float32 ``x`` when the kernels are on, else ``None``."""
    if x.dtype != np.float32 or not x.size:
        return None
    # an elementwise map: a Fortran-ordered array as its transpose; any other layout copied, so that
    # the values never depend on the memory layout (NumPy's path and the kernel differ by an ulp)
    fortran = not x.flags.c_contiguous and x.flags.f_contiguous
    if not (x.flags.c_contiguous or fortran or jit.enabled()):  # no copy for NumPy's path
        return None
    inner = x.T if fortran else np.ascontiguousarray(x)
    if not jit.takes(inner):
        return None
    y, d = gelu_kernels.gelu_and_slope(inner, slope)
    if fortran:
        return y.T, None if d is None else d.T
    return y, d


class _Scratch32:
    """Reused per-block work arrays of the float32 CDF: four float32 rows and the table indices.

    Allocating them per block (what ``np.floor`` and ``astype`` return) costs
    about a tenth of GELU's time at 32768 values a block.
    """

    def __init__(self, size: int) -> None:
        self.rows = np.empty((4, size), dtype=np.float32)
        self.index = np.empty(size, dtype=np.intp)

    def view(self, size: int) -> tuple[np.ndarray, ...]:
        return (*self.rows[:, :size], self.index[:size])


def _gelu32(x: np.ndarray, y: np.ndarray, slope: np.ndarray | None, scratch: tuple[np.ndarray, ...]) -> None:
    """One float32 block: ``y = x Phi(x)`` and, if given, ``slope = Phi(x) + x phi(x)``."""
    cdf, gaussian = scratch[:2]
    _normal_cdf32(x, cdf, gaussian, scratch[2:])
    np.multiply(x, cdf, out=y)
    if slope is not None:
        gaussian *= np.float32(_INV_SQRT_2PI)
        gaussian *= x
        np.add(cdf, gaussian, out=slope)


def _normal_cdf32(
    x: np.ndarray, cdf: np.ndarray, gaussian: np.ndarray, scratch: tuple[np.ndarray, ...]
) -> None:
    """Fill ``cdf`` and ``gaussian`` for one float32 block ``x`` (see :func:`normal_cdf_and_gaussian`).

    With ``t = |x| / sqrt 2``, the table position of ``u`` is
    ``n (u + 1) / 2 = n - n k sqrt2 / (|x| + k sqrt2)``; ``h = erfc(t) / 2 = E(u) exp(-t^2)``
    is ``Phi(x)`` for ``x < 0`` and ``1 - Phi(x)`` otherwise. ``scratch`` is
    two float32 arrays and one of ``intp`` the size of ``x``. Callers ignore
    overflow and underflow: ``x^2`` is inf past ``|x| ~ 1.8e19`` and
    ``exp(-x^2 / 2)`` 0 past ``|x| ~ 14``, both the right answer (``h = 0``).
    """
    f = np.float32
    values, slopes = _erfcx_table()
    n, ks = _TABLE_SIZE, _ERFCX_K * _SQRT_2
    pos, cell, index = scratch
    np.abs(x, out=pos)
    np.square(pos, out=gaussian)  # inf past |x| ~ 1.8e19, then exp(-inf) = 0: the caller ignores overflow
    pos += f(ks)
    np.divide(f(n * ks), pos, out=pos)
    np.subtract(f(n), pos, out=pos)
    np.floor(pos, out=cell)
    with np.errstate(invalid="ignore"):  # NaN positions: any index, clipped; NaN flows through frac
        np.copyto(index, cell, casting="unsafe")
    pos -= cell  # the fraction within the cell
    half_tail = np.take(slopes, index, mode="clip", out=cdf)
    half_tail *= pos
    half_tail += np.take(values, index, mode="clip", out=cell)
    gaussian *= f(-0.5)
    np.exp(gaussian, out=gaussian)
    half_tail *= gaussian  # h = erfc(t) / 2, the CDF of -|x|
    # Phi(x) = |[x >= 0] - h|: h itself (exactly) where x < 0, 1 - h elsewhere
    np.greater_equal(x, f(0.0), out=pos, casting="unsafe")
    np.subtract(pos, half_tail, out=cdf)
    np.abs(cdf, out=cdf)


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function ``erfc(x) = 1 - erf(x)``, elementwise.

    Accurate to about 1e-15 absolute and 1e-13 relative in float64, also
    deep in the tail (``erfc(10) ~ 2e-45``); float32 input is evaluated in
    float32 (relative error ~1e-7).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return erfc_and_gaussian(x)[0]


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF ``Phi(x) = erfc(-x / sqrt(2)) / 2``, accurate in both tails."""
    x = np.asarray(x)
    return x.dtype.type(0.5) * erfc(-x * x.dtype.type(1.0 / _SQRT_2))


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(-|x|)`` never exceeds 1."""
    e = np.exp(-np.abs(x))
    # numerator: 1 for x >= 0, exp(x) = e otherwise (e <= 1)
    return np.maximum(e, x >= 0) / (x.dtype.type(1.0) + e)


def as_float(x: Any) -> np.ndarray:
    """``x`` as an array; integer and boolean input in the default float dtype, floats unchanged."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(get_default_dtype())


_ZEROS: dict[tuple[Any, ...], np.ndarray] = {}


def zeros_like_cached(x: np.ndarray) -> np.ndarray:
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
