"""LayerNorm's compiled kernels (the ``[jit]`` extra): each row read from memory once per pass.

On ``rows`` ``(M, D)`` (one row per normalised group), with per-row ``mean``
and ``inv_std = 1 / sqrt(var + eps)``, ``xhat = (x - mean) inv_std``,
``gamma`` and ``beta`` of ``D`` values:

- :func:`row_moments`: each row's mean and biased variance (the centred
  squares: no cancellation), the row read twice while it is in cache;
- :func:`normalize`: ``y = xhat gamma + beta``, one pass;
- :func:`backward`: per row, ``s1 = sum(g gamma)`` and
  ``s2 = sum(g gamma xhat)``, then
  ``dx = inv_std (g gamma - s1 / D - xhat s2 / D)``; ``sum g xhat`` and
  ``sum g`` over the rows go to ``dL/dgamma`` and ``dL/dbeta``
  ([the LayerNorm maths](../maths/layernorm.md)).

A row whose squares overflow (``var = inf``) is left to the NumPy path,
which rescales it (:func:`plugins.layer_norm.safe_inv_std`). Sums run in the
input's dtype within a row and in float64 across rows; NaN and inf propagate
as in NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled

__all__ = ["row_moments", "normalize", "backward"]


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})

    @jit
    def moments(x: Any, mean: Any, var: Any) -> None:
        m, d = x.shape
        zero = np.zeros(1, x.dtype)[0]
        per = np.full(1, 1.0 / d, x.dtype)[0]  # 1 / D in x's dtype: the arithmetic stays in it
        for i in range(m):
            row = x[i]
            total = zero
            for k in range(d):
                total += row[k]
            mu = total * per
            squares = zero
            for k in range(d):
                c = row[k] - mu
                squares += c * c
            mean[i], var[i] = mu, squares * per

    @jit
    def normalize(x: Any, mean: Any, inv_std: Any, gamma: Any, beta: Any, y: Any) -> None:
        m, d = x.shape
        for i in range(m):
            row, out, mu, r = x[i], y[i], mean[i], inv_std[i]
            for k in range(d):
                out[k] = (row[k] - mu) * r * gamma[k] + beta[k]

    @jit
    def backward(
        x: Any, g: Any, mean: Any, inv_std: Any, gamma: Any, dx: Any, dgamma: Any, dbeta: Any
    ) -> None:
        m, d = x.shape
        zero = np.zeros(1, x.dtype)[0]
        per = np.full(1, 1.0 / d, x.dtype)[0]
        for i in range(m):
            row, grad, out, mu, r = x[i], g[i], dx[i], mean[i], inv_std[i]
            s1, s2 = zero, zero
            for k in range(d):
                xhat = (row[k] - mu) * r
                dxhat = grad[k] * gamma[k]
                s1 += dxhat
                s2 += dxhat * xhat
                dgamma[k] += grad[k] * xhat
                dbeta[k] += grad[k]
            s1 *= per
            s2 *= per
            for k in range(d):
                xhat = (row[k] - mu) * r
                out[k] = r * (grad[k] * gamma[k] - s1 - xhat * s2)

    return {"moments": moments, "normalize": normalize, "backward": backward}


def row_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and biased variance, ``(M,)`` each in ``rows``' dtype."""
    mean, var = np.empty(rows.shape[0], rows.dtype), np.empty(rows.shape[0], rows.dtype)
    _kernels()["moments"](rows, mean, var)
    return mean, var


def normalize(
    rows: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """``(rows - mean) inv_std gamma + beta``, a new ``(M, D)`` array."""
    y = np.empty_like(rows)
    _kernels()["normalize"](rows, mean, inv_std, gamma, beta, y)
    return y


def backward(
    rows: np.ndarray, g: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, sum over rows of g xhat, sum over rows of g)``; the sums ``(D,)`` float64."""
    dx = np.empty_like(rows)
    dgamma, dbeta = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
    _kernels()["backward"](rows, g, mean, inv_std, gamma, dx, dgamma, dbeta)
    return dx, dgamma, dbeta
