"""Scaled dot-product attention: the maths, a NumPy function and a function layer.

The pure functions here (:func:`attention_forward`, :func:`attention_backward`,
:func:`~plugins.attention_masks.mask_to_bias`, :func:`~plugins.attention_masks.causal_bias`, re-exported
here) are what
:class:`~plugins.multihead_attention.MultiheadAttention` and the transformer
blocks are built on; :func:`scaled_dot_product_attention` is PyTorch's
``torch.nn.functional.scaled_dot_product_attention`` on arrays and
:class:`ScaledDotProductAttention` the same as a layer with its own backward.

Registered by the ``plugins.transformer`` entry point.

Notation: ``Q`` is ``(..., L, D)``, ``K`` is ``(..., S, D)``, ``V`` is
``(..., S, Dv)``, the leading axes (batch, heads) broadcast-free and equal.
``B`` is an additive bias ``(..., L, S)`` (``-inf`` where a key is masked).

Forward::

    Z = (scale * Q) K^T + B        (..., L, S)
    P = softmax(Z) along S          rows of only -inf give P = 0 (PyTorch's safe softmax)
    P' = P * M / (1 - p)            dropout mask M, training only
    Y = P' V                        (..., L, Dv)

Gradient (``G = dL/dY``)::

    dV = P'^T G
    dP = (G V^T + W) * M / (1 - p)  W = dL/dP' when the loss also reads the returned weights, else 0
    dZ = P * (dP - rowsum(G * Y))  the softmax Jacobian, fused in place on dP;
                                    rowsum(dP * P) = rowsum(G * Y) + rowsum(W * P'); 0 on masked rows
    dQ = scale * dZ K
    dK = dZ^T (scale * Q)

A fully masked row has ``P = 0``, so ``Y = 0`` there and ``dZ = 0``: no NaN
reaches any gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.validation import check_bool
from framework.errors import ConfigError, DataError, ShapeError
from framework.runtime.dtype import HALF
from framework.runtime.random import get_rng
from plugins.attention_causal import (
    _causal_backward,
    _causal_forward,
    _default_blocks,
    _ones,
    _swap,
)
from plugins.attention_masks import causal_bias, mask_to_bias

__all__ = [
    "ScaledDotProductAttention",
    "attention_backward",
    "attention_forward",
    "causal_bias",
    "dropout_probability",
    "mask_to_bias",
    "scaled_dot_product_attention",
]


def dropout_probability(owner: str, arg: str, value: Any) -> float:
    """``value`` as a dropout probability in ``[0, 1)`` (NumPy scalars too), else a ConfigError."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= value < 1.0
    ):
        raise ConfigError(f"{owner}: {arg} must be a probability in [0, 1), got {value!r}")
    return float(value)


def attention_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias: np.ndarray | None,
    scale: float,
    dropout_p: float = 0.0,
    rng: np.random.Generator | None = None,
    record: bool = True,
    out: np.ndarray | None = None,
    causal: bool = False,
    causal_blocks: int | None = None,
    keep_probs: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``softmax(scale Q K^T + B) V`` with optional dropout on the probabilities.

    Every product is one ``np.matmul`` over the leading (batch, heads) axes.
    ``q``, ``k`` and ``v`` may be strided views (heads sliced out of a packed
    projection): each ``(L, D)`` matrix only needs unit stride along ``D``
    for BLAS, so no head is copied. The scale is applied to ``Q`` (``L D``
    numbers) rather than to the scores (``L S``), and the softmax runs in place
    on the one ``(..., L, S)`` score buffer.

    Args:
        q, k, v: ``(..., L, D)``, ``(..., S, D)``, ``(..., S, Dv)`` with equal leading axes.
        bias: additive ``(..., L, S)`` (broadcast), or ``None``.
        scale: the factor of the scores.
        dropout_p: dropout probability on ``P`` (0 for none).
        record: keep what :func:`attention_backward` needs in the returned cache.
        out: optional ``(..., L, Dv)`` array (any strides with unit stride
            along ``Dv``, such as the merged-heads layout) that receives ``Y``.
        causal: ``bias`` is exactly :func:`causal_bias` ``(L, S)`` (no other
            mask). Without dropout and with ``L >= 64`` the queries are then
            split into row blocks, each attending only to the key prefix its
            rows can see (:func:`_causal_forward`); the result equals the
            general path up to rounding.
        causal_blocks: the number of row blocks of the causal path (``None``:
            :data:`plugins.attention_causal.CAUSAL_BLOCKS` when ``L >= 64``, else the general path;
            ``1`` forces the general path).
        keep_probs: the cache must hold the ``(..., L, S)`` probabilities
            (``probs``, ``dropped``: attention weights to return). ``False``
            lets unmasked attention without dropout hold its scores transposed
            as one block of the causal path (faster reductions), with
            ``blocks`` in the cache instead.

    Returns:
        ``(Y, cache)``: ``Y`` of shape ``(..., L, Dv)`` and the cache (``qs`` =
        ``scale Q``, ``k``, ``v``, ``probs``, ``dropped``, ``keep``, ``y``,
        ``scale``; the blocked causal path has ``blocks`` in place of
        ``probs`` and ``dropped``). float16 inputs are computed in float32
        (PyTorch's half attention accumulates so too): ``Y`` is float16, the
        cache float32.
    """
    if q.dtype == HALF:  # float16 scores, exponentials and row sums lose 1e-2: float32, Y rounded once
        q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
        args = (scale, dropout_p, rng, record, None, causal, causal_blocks, keep_probs)
        y, cache = attention_forward(q32, k32, v32, bias, *args)
        if out is None:
            return y.astype(HALF), cache
        out[...] = y
        return out, cache
    f = q.dtype.type
    qs = q if scale == 1.0 else np.multiply(q, f(scale))
    if causal and bias is not None and dropout_p == 0.0:
        length = q.shape[-2]
        nblocks = causal_blocks if causal_blocks is not None else _default_blocks(length)
        if 1 < nblocks <= length and k.shape[-2] > 0:
            return _causal_forward(qs, k, v, bias, scale, nblocks, record, out)
    if bias is None and dropout_p == 0.0 and not keep_probs and k.shape[-2] > 0:
        # no mask: one block of transposed scores, as the causal path (its reductions run down columns)
        return _causal_forward(qs, k, v, None, scale, 1, record, out)
    z = np.matmul(qs, _swap(k))
    if bias is not None:
        z += bias
    zmax = z.max(axis=-1, keepdims=True)
    if bias is not None:
        zmax[np.isneginf(zmax)] = 0  # fully masked rows: exp(-inf) = 0 below
    z -= zmax
    p = np.exp(z, out=z)
    total = np.matmul(p, _ones(p.shape[-1], p.dtype).T)  # row sums as BLAS products: 2x NumPy's sum
    if bias is not None:
        total[total == 0] = 1  # P = 0 on fully masked rows, as PyTorch's safe softmax
    p *= np.reciprocal(total, out=total)
    keep = None
    dropped = p
    if dropout_p > 0.0:
        rng = rng if rng is not None else get_rng()
        keep = (
            rng.random(p.shape, dtype=np.float32 if q.dtype == np.float16 else q.dtype) >= dropout_p
        ).astype(q.dtype)
        keep *= f(1.0 / (1.0 - dropout_p))
        dropped = p * keep
    y = np.matmul(dropped, v, out=out)
    if not record:
        return y, {"probs": p, "dropped": dropped}
    cache = {"qs": qs, "k": k, "v": v, "probs": p, "dropped": dropped, "keep": keep, "y": y, "scale": scale}
    return y, cache


def attention_backward(
    grad: np.ndarray,
    cache: dict[str, Any],
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    grad_probs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dQ, dK, dV)`` from ``G = dL/dY`` and the cache of :func:`attention_forward`.

    The softmax backward is fused in place on the one ``(..., L, S)`` buffer
    ``dP = G V^T`` (a temporary of this call): ``dZ = P * (dP - r)``. The row
    sums ``r = rowsum(dP * P)`` are taken as ``rowsum(G * Y)`` (equal, since
    ``Y = P' V``), on ``(..., L, Dv)`` instead of ``(..., L, S)``. ``dK`` uses
    the already scaled ``scale Q``; only ``dQ`` is scaled.

    Args:
        grad: ``G``, ``(..., L, Dv)``, any strides with unit stride along ``Dv``.
        out: optional ``(dQ, dK, dV)`` arrays to write into (unit stride along
            the last axis), such as the views of one packed ``[dQ dK dV]``.
        grad_probs: optional ``W = dL/dP'``, ``(..., L, S)`` or broadcasting
            to it, for a loss that also reads the returned weights ``P'`` (the
            probabilities after dropout, ``keep_probs``): then
            ``dL/dP' = G V^T + W`` and ``r = rowsum(G * Y) + rowsum(W * P')``.
    """
    if grad.dtype == HALF and cache["qs"].dtype != HALF:  # a float16 forward ran in float32
        wide = None if grad_probs is None else grad_probs.astype(np.float32)
        grads = attention_backward(grad.astype(np.float32), cache, None, wide)
        if out is None:
            return grads[0].astype(HALF), grads[1].astype(HALF), grads[2].astype(HALF)
        for dst, src in zip(out, grads):
            dst[...] = src
        return out
    if "blocks" in cache:
        if grad_probs is not None:
            raise ValueError("attention_backward: grad_probs needs the forward's whole (L, S) probabilities")
        return _causal_backward(grad, cache, out)
    qs, k, v, p, scale = cache["qs"], cache["k"], cache["v"], cache["probs"], cache["scale"]
    f = qs.dtype.type
    oq, ok, ov = out if out is not None else (None, None, None)
    dv = np.matmul(_swap(cache["dropped"]), grad, out=ov)
    dp = np.matmul(grad, _swap(v))
    if grad_probs is not None:
        dp += grad_probs
    if cache["keep"] is not None:
        dp *= cache["keep"]
    # a row-wise dot product of two (L, Dv) stacks: no matmul shape does it in one call
    row = np.einsum("...j,...j->...", grad, cache["y"])[..., None]
    if grad_probs is not None:
        row += np.sum(grad_probs * cache["dropped"], axis=-1, keepdims=True)
    dp -= row
    dp *= p
    dq = np.matmul(dp, k, out=oq)
    if scale != 1.0:
        dq *= f(scale)
    dk = np.matmul(_swap(dp), qs, out=ok)
    return dq, dk, dv


def _sdpa_bias(
    owner: str, q: np.ndarray, k: np.ndarray, attn_mask: Any, is_causal: bool
) -> np.ndarray | None:
    length, source = q.shape[-2], k.shape[-2]
    if is_causal and attn_mask is not None:
        raise ConfigError(f"{owner}: give attn_mask or is_causal=True, not both (as PyTorch)")
    if is_causal:
        return causal_bias(length, source, q.dtype)
    if attn_mask is None:
        return None
    bias = mask_to_bias(attn_mask, owner, "attn_mask", q.dtype, true_masks=False)
    target = (*q.shape[:-2], length, source)
    try:
        fits = np.broadcast_shapes(bias.shape, target) == target  # not more axes or sizes than the scores
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{owner}: attn_mask of shape {bias.shape} does not broadcast to the scores' shape {target}"
        )
    return bias


def _check_qkv(owner: str, q: Any, k: Any, v: Any) -> None:
    for name, a in (("query", q), ("key", k), ("value", v)):
        if not isinstance(a, np.ndarray) or a.ndim < 2:
            raise ShapeError(
                f"{owner}: {name} must be an array of shape (..., L, E), got {getattr(a, 'shape', a)!r}"
            )
        if a.dtype.kind != "f":
            raise DataError(f"{owner}: {name} must be a floating-point array, got dtype {a.dtype}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ShapeError(
            f"{owner}: expected query (..., L, E), key (..., S, E) and value (..., S, Ev) with the same "
            f"leading axes; got query {q.shape}, key {k.shape}, value {v.shape}"
        )
    _check_keys(owner, k)


def _check_keys(owner: str, k: np.ndarray) -> None:
    """A softmax over no keys does not exist: S = 0 is refused with the shapes named."""
    if k.shape[-2] == 0:
        raise ShapeError(f"{owner}: attention needs at least one key, got key of shape {k.shape} (S = 0)")


def scaled_dot_product_attention(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> np.ndarray:
    """PyTorch's ``F.scaled_dot_product_attention`` on NumPy arrays (forward only).

    A boolean ``attn_mask`` marks the pairs that *take part* (``True``), as in
    PyTorch's function; a float mask is added to the scores. ``scale``
    defaults to ``1 / sqrt(E)``. Use :class:`ScaledDotProductAttention` for
    the backward.

    Example:
        >>> import numpy as np
        >>> q = np.ones((2, 3, 4)); k = np.ones((2, 5, 4)); v = np.ones((2, 5, 6))
        >>> scaled_dot_product_attention(q, k, v).shape
        (2, 3, 6)
    """
    owner = "scaled_dot_product_attention"
    dropout_p = dropout_probability(owner, "dropout_p", dropout_p)
    _check_qkv(owner, query, key, value)
    bias = _sdpa_bias(owner, query, key, attn_mask, is_causal)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    y, _ = attention_forward(
        query, key, value, bias, s, dropout_p, record=False, causal=bool(is_causal), keep_probs=False
    )
    return y


class ScaledDotProductAttention(Layer):
    """``softmax(Q K^T * scale + mask) V`` as a layer of three inputs, with its hand-derived backward.

    Called on ``[query, key, value]``; a per-call ``attn_mask`` may be passed
    as a keyword (``layer([q, k, v], attn_mask=m)``); in a functional graph a
    keyword is a fixed value stored in the config, so prefer ``is_causal``.
    A boolean mask marks the pairs that take part (``True``), as PyTorch's
    function; a float mask is added to the scores. Rows with every key masked
    give 0 (PyTorch's behaviour), with zero gradients.

    Args:
        dropout_p: dropout on the attention probabilities in training mode.
        is_causal: mask key ``j > i`` for query ``i`` (top-left aligned).
        scale: the factor of the scores; ``None`` means ``1 / sqrt(E)``.

    Shape:
        - Input: ``[(N, ..., L, E), (N, ..., S, E), (N, ..., S, Ev)]``.
        - Output: ``(N, ..., L, Ev)``.

    Gradient:
        See the module docstring: ``dV = P^T G``, ``dZ = P (G V^T - rowsum(P * G V^T))``,
        ``dQ = scale dZ K``, ``dK = scale dZ^T Q`` (docs/maths/attention.md).
    """

    def __init__(
        self,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if scale is not None and (
            isinstance(scale, (bool, np.bool_))
            or not isinstance(scale, (int, float, np.integer, np.floating))
            or not 0 < scale < math.inf
        ):
            raise ConfigError(
                f"ScaledDotProductAttention: scale must be a positive number or None, got {scale!r}"
            )
        self.dropout_p = dropout_probability("ScaledDotProductAttention", "dropout_p", dropout_p)
        self.is_causal = check_bool("ScaledDotProductAttention", "is_causal", is_causal)
        self.scale = None if scale is None else float(scale)

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None  # sequence lengths may change from call to call

    def forward(self, ctx: Context, x: list[np.ndarray], attn_mask: Any = None) -> np.ndarray:
        if not isinstance(x, (list, tuple)) or len(x) != 3:
            raise ShapeError(f"{self.describe()} expects a list [query, key, value], got {type(x).__name__}")
        q, k, v = x
        _check_qkv(self.describe(), q, k, v)
        bias = _sdpa_bias(self.describe(), q, k, attn_mask, self.is_causal)
        s = 1.0 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        p = self.dropout_p if ctx.training else 0.0
        y, ctx.cache = attention_forward(
            q, k, v, bias, s, p, record=ctx.record, causal=self.is_causal, keep_probs=False
        )
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        return list(attention_backward(grad_out, ctx.cache))

    def output_shape(self, input_shape: Any) -> Any:
        if not isinstance(input_shape, list) or len(input_shape) != 3:
            raise ShapeError(
                f"{self.describe()} expects 3 inputs [query, key, value], got {format_shape(input_shape)}"
            )
        q, _, v = input_shape
        return (*q[:-1], v[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dropout_p": self.dropout_p,
            "is_causal": self.is_causal,
            "scale": self.scale,
        }
