"""BatchNorm's compiled kernels (the ``[jit]`` extra): each phase one pass over memory.

On ``rows`` of shape ``(N, C, S)`` (channels on axis 1, ``m = N S`` values
per channel), with per-channel ``mean``, ``inv_std = 1 / sqrt(var + eps)``,
``scale = gamma inv_std`` and ``beta``:

- :func:`moments`: ``mean`` and the biased ``var`` of each channel, two
  passes (the variance of the centred values, which does not cancel);
- :func:`centred_affine`: ``y = (x - mean) scale + beta``, one pass;
- :func:`train_backward`: ``sum g`` and ``sum g (x - mean)`` per channel in
  one pass, then ``dx = scale g + k (x - mean) - scale sum(g) / m`` with
  ``k = -scale inv_std^2 sum(g (x - mean)) / m`` in a second
  ([the BatchNorm maths](../maths/batchnorm.md)).

NumPy needs three to five passes for each of these, each through memory.
Sums run over blocks of :data:`BLOCK` values in the input's dtype (vectorised;
a vector lane of float32 adds 64-128 of them), the blocks added in float64. The
arithmetic is IEEE except for the order of a sum (``reassoc``): NaN and inf
propagate as in NumPy. The layer (:mod:`plugins.normalization`) calls these
only where :func:`framework.runtime.jit.enabled` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled

__all__ = ["BLOCK", "moments", "centred_affine", "train_backward"]

#: values summed in the input's dtype before the running total (float64) takes them
BLOCK = 1024


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})

    @jit
    def moments(x: Any, mean: Any, var: Any) -> None:
        n, c, s = x.shape
        zero = np.zeros(1, x.dtype)[0]
        for ch in range(c):
            total = 0.0
            for i in range(n):
                for start in range(0, s, BLOCK):
                    block = x[i, ch, start : start + BLOCK]  # a view, counted from 0: vectorised
                    part = zero
                    for k in range(block.shape[0]):
                        part += block[k]
                    total += part
            mean[ch] = total / (n * s)
            mu = mean[ch]  # in x's dtype
            total = 0.0
            for i in range(n):
                for start in range(0, s, BLOCK):
                    block = x[i, ch, start : start + BLOCK]
                    part = zero
                    for k in range(block.shape[0]):
                        d = block[k] - mu
                        part += d * d
                    total += part
            var[ch] = total / (n * s)

    @jit
    def centred_affine(x: Any, mean: Any, scale: Any, shift: Any, y: Any) -> None:
        n, c, s = x.shape
        for i in range(n):
            for ch in range(c):
                mu, a, b = mean[ch], scale[ch], shift[ch]
                xr, yr = x[i, ch], y[i, ch]
                for k in range(s):
                    yr[k] = (xr[k] - mu) * a + b

    @jit
    def train_backward(x: Any, g: Any, mean: Any, inv_std: Any, scale: Any, dx: Any, sums: Any) -> None:
        n, c, s = x.shape
        zero = np.zeros(1, x.dtype)[0]
        m = n * s
        for ch in range(c):
            mu = mean[ch]
            sum_g, sum_gxc = 0.0, 0.0
            for i in range(n):
                for start in range(0, s, BLOCK):
                    gb, xb = g[i, ch, start : start + BLOCK], x[i, ch, start : start + BLOCK]
                    part_g, part_gxc = zero, zero
                    for k in range(gb.shape[0]):
                        part_g += gb[k]
                        part_gxc += gb[k] * (xb[k] - mu)
                    sum_g += part_g
                    sum_gxc += part_gxc
            sums[ch, 0], sums[ch, 1] = sum_g, sum_gxc
            # dx's three per-channel factors, rounded once to x's dtype
            sums[ch, 2] = -scale[ch] * inv_std[ch] * inv_std[ch] * sum_gxc / m
            sums[ch, 3] = -scale[ch] * sum_g / m
        factors = sums[:, 2:].astype(x.dtype)
        for i in range(n):
            for ch in range(c):
                mu, a, kx, k0 = mean[ch], scale[ch], factors[ch, 0], factors[ch, 1]
                xr, gr, dr = x[i, ch], g[i, ch], dx[i, ch]
                for k in range(s):
                    dr[k] = a * gr[k] + kx * (xr[k] - mu) + k0

    return {"moments": moments, "centred_affine": centred_affine, "train_backward": train_backward}


def moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``rows`` ``(N, C, S)``, each ``(C,)`` in its dtype."""
    c = rows.shape[1]
    mean, var = np.empty(c, rows.dtype), np.empty(c, rows.dtype)
    _kernels()["moments"](rows, mean, var)
    return mean, var


def centred_affine(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``(rows - mean) * scale + shift`` per channel: a new ``(N, C, S)`` array, one pass."""
    y = np.empty_like(rows)
    _kernels()["centred_affine"](rows, *(np.asarray(v, rows.dtype) for v in (mean, scale, shift)), y)
    return y


def train_backward(
    rows: np.ndarray, g: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm's training backward: ``(dx, sum g, sum g (x - mean))``, the sums ``(C,)`` float64.

    ``rows`` and ``g`` are ``(N, C, S)`` of one dtype; ``dx`` is new, of that dtype.
    """
    dx = np.empty_like(rows)
    sums = np.empty((rows.shape[1], 4))
    mean, inv_std, scale = (np.asarray(v, rows.dtype) for v in (mean, inv_std, scale))
    _kernels()["train_backward"](rows, g, mean, inv_std, scale, dx, sums)
    return dx, sums[:, 0], sums[:, 1]
