"""The causal path of attention: score blocks above the diagonal are never computed.

With a causal mask, query ``i`` sees keys ``j <= i``, so about half the scores
are masked. The queries are split into row blocks; block ``[r0, r1)`` computes
its scores, softmax and ``P V`` on the key prefix ``[0, min(r1, S))`` only, and
the backward accumulates ``dK`` and ``dV`` over the blocks that see each key.
The results equal the general path of :mod:`plugins.attention` (masked
probabilities are exactly 0 there too); see ``docs/maths/attention.md``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=32)
def _causal_bias(length: int, source_length: int, dtype: np.dtype) -> np.ndarray:
    bias = np.zeros((length, source_length), dtype=dtype)
    bias[np.triu_indices(length, k=1, m=source_length)] = -np.inf
    bias.flags.writeable = False  # shared between calls and threads: a read-only constant
    return bias


@functools.lru_cache(maxsize=32)
def _causal_bias_t(length: int, source_length: int, dtype: np.dtype) -> np.ndarray:
    """The causal bias transposed, ``(S, L)`` and contiguous: the layout of the blocks' scores."""
    bias = np.ascontiguousarray(_causal_bias(length, source_length, dtype).T)
    bias.flags.writeable = False
    return bias


@functools.lru_cache(maxsize=32)
def _ones(length: int, dtype: np.dtype) -> np.ndarray:
    """A read-only ``(1, length)`` row of ones, shared."""
    ones = np.ones((1, length), dtype=dtype)
    ones.flags.writeable = False
    return ones


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


CAUSAL_BLOCKS = 4
"""Row blocks of the causal path: the products cover ``(B + 1) / 2B`` of the scores."""
CAUSAL_MIN_LENGTH = 64
"""Shorter query sequences take the general path (the blocks' overhead dominates)."""


def _default_blocks(length: int) -> int:
    return CAUSAL_BLOCKS if length >= CAUSAL_MIN_LENGTH else 1


def _causal_spans(length: int, source: int, nblocks: int) -> list[tuple[int, int, int]]:
    """``(r0, r1, end)``: rows ``[r0, r1)`` see keys ``[0, end)``, ``end = min(r1, S)`` (``j <= i``)."""
    bounds = [round(b * length / nblocks) for b in range(nblocks + 1)]
    return [(r0, r1, min(r1, source)) for r0, r1 in itertools.pairwise(bounds) if r1 > r0]


def _causal_forward(
    qs: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias: np.ndarray | None,
    scale: float,
    nblocks: int,
    record: bool,
    out: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The causal forward on row blocks: block ``b`` of rows ``[r0, r1)`` uses keys ``[0, end_b)``.

    The keys past ``end_b`` are masked for every row of the block, so their
    probabilities are exactly 0 in the general path: leaving them out changes
    only the rounding of the sums. Every row sees key 0, so no row is fully
    masked. Each block's scores are held transposed, keys by queries
    (``(..., end_b, r1 - r0)``): the softmax's maximum and sum over the keys
    then run down the columns, element-wise over whole contiguous rows, which
    NumPy does about 3x faster than a reduction along each short row. The
    cache holds one transposed probability block per row block (``blocks``)
    instead of ``probs``.
    """
    length, source = qs.shape[-2], k.shape[-2]
    y = out if out is not None else np.empty((*qs.shape[:-1], v.shape[-1]), dtype=qs.dtype)
    if bias is None:  # no mask at all: one block of every query on every key
        spans, bias_t = [(0, length, source)], None
    else:
        spans = _causal_spans(length, source, nblocks)
        bias_t = _causal_bias_t(length, source, qs.dtype) if bias.ndim == 2 else _swap(bias)
    blocks = []
    for r0, r1, end in spans:
        zt = np.matmul(k[..., :end, :], _swap(qs[..., r0:r1, :]))  # (..., end, rows)
        if bias_t is not None and r0 < end:  # keys before r0 are seen by every row of the block: bias 0
            zt[..., r0:end, :] += bias_t[..., r0:end, r0:r1]
        zt -= zt.max(axis=-2, keepdims=True)
        pt = np.exp(zt, out=zt)
        # the column sums as a product with a row of ones: BLAS, 7x faster than pt.sum(axis=-2)
        total = np.matmul(_ones(end, pt.dtype), pt)
        pt *= np.reciprocal(total, out=total)
        np.matmul(_swap(pt), v[..., :end, :], out=y[..., r0:r1, :])
        blocks.append((r0, r1, end, pt))
    if not record:
        return y, {"blocks": blocks}
    cache = {"qs": qs, "k": k, "v": v, "blocks": blocks, "keep": None, "y": y, "scale": scale}
    return y, cache


def _causal_backward(
    grad: np.ndarray,
    cache: dict[str, Any],
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`attention_backward` on the row blocks of :func:`_causal_forward`.

    ``dQ`` rows are written block by block; ``dK`` and ``dV`` sum over the
    blocks that see each key: the widest block (the last) writes its prefix,
    the rest add to theirs, keys no row sees get 0.
    """
    qs, k, v, scale = cache["qs"], cache["k"], cache["v"], cache["scale"]
    f = qs.dtype.type
    lead = qs.shape[:-2]
    if out is not None:
        dq, dk, dv = out
    else:
        dq = np.empty(qs.shape, dtype=qs.dtype)
        dk = np.empty(k.shape, dtype=qs.dtype)
        dv = np.empty((*lead, v.shape[-2], grad.shape[-1]), dtype=qs.dtype)
    row = np.einsum("...j,...j->...", grad, cache["y"])[..., None, :]  # (..., 1, L)
    first = True
    for r0, r1, end, pt in reversed(cache["blocks"]):
        g = grad[..., r0:r1, :]
        if first:  # the widest prefix: written, the keys past it zeroed
            np.matmul(pt, g, out=dv[..., :end, :])
            dv[..., end:, :] = 0
        else:
            dv[..., :end, :] += np.matmul(pt, g)
        dpt = np.matmul(v[..., :end, :], _swap(g))  # (..., end, rows)
        dpt -= row[..., r0:r1]
        dpt *= pt
        np.matmul(_swap(dpt), k[..., :end, :], out=dq[..., r0:r1, :])
        if first:
            np.matmul(dpt, qs[..., r0:r1, :], out=dk[..., :end, :])
            dk[..., end:, :] = 0
        else:
            dk[..., :end, :] += np.matmul(dpt, qs[..., r0:r1, :])
        first = False
    if scale != 1.0:
        dq *= f(scale)
    return dq, dk, dv
