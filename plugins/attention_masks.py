"""Attention masks as additive biases on the scores: causal, boolean or float, per head and per key.

:func:`causal_bias` and :func:`mask_to_bias` turn PyTorch's mask forms into
the additive ``(..., L, S)`` bias of :func:`plugins.attention.attention_forward`
(``-inf`` where a key is masked); :func:`head_bias` combines ``attn_mask``,
``key_padding_mask`` and ``is_causal`` as ``nn.MultiheadAttention`` takes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import DataError, ShapeError
from plugins.attention_causal import _causal_bias

__all__ = ["causal_bias", "head_bias", "mask_to_bias"]


def causal_bias(length: int, source_length: int, dtype: Any) -> np.ndarray:
    """The ``(L, S)`` additive causal mask: ``0`` where ``j <= i``, ``-inf`` above the diagonal.

    Top-left aligned like PyTorch's ``is_causal`` (``tril(ones(L, S))``). The
    array is built once per ``(L, S, dtype)`` and shared: it is read-only.
    """
    return _causal_bias(int(length), int(source_length), np.dtype(dtype))


def mask_to_bias(mask: Any, owner: str, arg: str, dtype: Any, *, true_masks: bool) -> np.ndarray:
    """A boolean or float mask as an additive float bias of ``dtype``.

    Args:
        mask: a boolean array (``true_masks=True``: ``True`` means *masked*, as
            ``nn.MultiheadAttention``; ``False``: ``True`` means *attend*, as
            ``F.scaled_dot_product_attention``) or a float array added to the
            scores as it is.
        owner, arg: names for the error message.

    Raises:
        DataError: a mask that is not a boolean or floating-point array.
    """
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        blocked = m if true_masks else ~m
        bias = np.zeros(m.shape, dtype=dtype)
        bias[blocked] = -np.inf
        return bias
    if np.issubdtype(m.dtype, np.floating):
        return m.astype(dtype, copy=False)
    raise DataError(
        f"{owner}: {arg} must be a boolean mask or a float (additive) mask, got dtype {m.dtype}; "
        f"convert 0/1 integers with {arg}.astype(bool)"
    )


def head_bias(
    owner: str,
    heads: int,
    shape: tuple[int, int, int],
    dtype: Any,
    attn_mask: Any,
    key_padding_mask: Any,
    is_causal: bool,
) -> np.ndarray | None:
    """The bias of ``nn.MultiheadAttention``'s masks for ``shape = (N, L, S)``; ``None`` for no mask.

    ``attn_mask`` is ``(L, S)`` or ``(N * heads, L, S)`` (boolean: ``True`` =
    masked, or float); ``is_causal`` builds the causal mask when it is
    ``None``; ``key_padding_mask`` ``(N, S)`` is added per sample. The result
    broadcasts to ``(N, heads, L, S)``.

    Raises:
        ShapeError: a mask of another shape, naming ``owner``.
    """
    n, length, source = shape
    bias = None
    if attn_mask is None and is_causal:
        bias = causal_bias(length, source, dtype)
    elif attn_mask is not None:
        m = mask_to_bias(attn_mask, owner, "attn_mask", dtype, true_masks=True)
        if m.shape == (length, source):
            bias = m
        elif m.shape == (n * heads, length, source):
            bias = m.reshape(n, heads, length, source)
        else:
            raise ShapeError(
                f"{owner}: attn_mask must have shape ({length}, {source}) or "
                f"({n * heads}, {length}, {source}) (N * num_heads, L, S), got {m.shape}"
            )
    if key_padding_mask is not None:
        m = mask_to_bias(key_padding_mask, owner, "key_padding_mask", dtype, true_masks=True)
        if m.shape != (n, source):
            raise ShapeError(
                f"{owner}: key_padding_mask must have shape (N, S) = ({n}, {source}), got {m.shape}"
            )
        m = m.reshape(n, 1, 1, source)
        bias = m if bias is None else bias + m
    return bias
