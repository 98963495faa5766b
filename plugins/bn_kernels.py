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

Under ``fit(threads=K)`` each shard passes its thread group (``member``):
the sums of every pass are added over the shards between the passes, so the
statistics and ``dx`` are the whole batch's, as on NumPy's path.

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
from framework.runtime.threads import ThreadGroup

__all__ = ["BLOCK", "moments", "centred_affine", "train_backward"]

#: values summed in the input's dtype before the running total (float64) takes them
BLOCK = 1024

Member = tuple[ThreadGroup, int] | None


@compiled
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})

    @jit
    def sums(x: Any, out: Any) -> None:
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
            out[ch] = total

    @jit
    def centred_squares(x: Any, mean: Any, out: Any) -> None:
        n, c, s = x.shape
        zero = np.zeros(1, x.dtype)[0]
        for ch in range(c):
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
            out[ch] = total

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
    def gradient_sums(x: Any, g: Any, mean: Any, out: Any) -> None:
        n, c, s = x.shape
        zero = np.zeros(1, x.dtype)[0]
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
            out[0, ch], out[1, ch] = sum_g, sum_gxc

    @jit
    def input_gradient(x: Any, g: Any, mean: Any, factors: Any, dx: Any) -> None:
        n, c, s = x.shape
        for i in range(n):
            for ch in range(c):
                mu, a, kx, k0 = mean[ch], factors[ch, 0], factors[ch, 1], factors[ch, 2]
                xr, gr, dr = x[i, ch], g[i, ch], dx[i, ch]
                for k in range(s):
                    dr[k] = a * gr[k] + kx * (xr[k] - mu) + k0

    return {
        "sums": sums,
        "centred_squares": centred_squares,
        "centred_affine": centred_affine,
        "gradient_sums": gradient_sums,
        "input_gradient": input_gradient,
    }


def _over_shards(values: np.ndarray, member: Member) -> np.ndarray:
    return values if member is None else member[0].allreduce(member[1], values)


def moments(rows: np.ndarray, member: Member = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel mean and biased variance of ``rows`` ``(N, C, S)``, each ``(C,)`` in its dtype, and ``m``.

    With a ``member`` of a thread group, the whole batch's: every shard's
    sums (and value counts) are added before the mean, and again before the
    variance.
    """
    family = _kernels()
    c = rows.shape[1]
    local = np.empty(c + 1)
    family["sums"](rows, local[:c])
    local[c] = rows.size // c
    total = _over_shards(local, member)
    m = int(total[c])
    mean = (total[:c] / max(m, 1)).astype(rows.dtype)
    squares = np.empty(c)
    family["centred_squares"](rows, mean, squares)
    var = (_over_shards(squares, member) / max(m, 1)).astype(rows.dtype)
    return mean, var, m


def centred_affine(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``(rows - mean) * scale + shift`` per channel: a new ``(N, C, S)`` array, one pass."""
    y = np.empty_like(rows)
    _kernels()["centred_affine"](rows, *(np.asarray(v, rows.dtype) for v in (mean, scale, shift)), y)
    return y


def train_backward(
    rows: np.ndarray,
    g: np.ndarray,
    mean: np.ndarray,
    inv_std: np.ndarray,
    scale: np.ndarray,
    m: int,
    member: Member = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm's training backward: ``(dx, sum g, sum g (x - mean))``, the sums ``(C,)`` float64.

    ``rows`` and ``g`` are ``(N, C, S)`` of one dtype; ``dx`` is new, of that
    dtype. ``m`` is the batch's count of values per channel. The sums
    returned are this shard's (its part of the parameter gradients); with a
    ``member``, ``dx`` takes the sums over every shard.
    """
    family = _kernels()
    mean = np.asarray(mean, rows.dtype)
    local = np.empty((2, rows.shape[1]))  # sum g, then sum g (x - mean): NumPy's path sends the same
    family["gradient_sums"](rows, g, mean, local)
    sum_g, sum_gxc = _over_shards(local.reshape(-1), member).reshape(2, -1)
    factors = np.empty((rows.shape[1], 3))
    factors[:, 0] = scale
    factors[:, 1] = -scale * inv_std * inv_std * sum_gxc / m
    factors[:, 2] = -scale * sum_g / m
    dx = np.empty_like(rows)
    family["input_gradient"](rows, g, mean, factors.astype(rows.dtype), dx)
    return dx, local[0], local[1]
