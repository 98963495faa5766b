"""``MultiheadAttention`` with PyTorch's parameters, masks and results, and a hand-derived backward.

Registered by the ``plugins.transformer`` entry point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, positive_int
from framework.base.validation import resolve_initializer as _initializer
from framework.errors import ConfigError, ShapeError
from framework.runtime import blas
from framework.runtime.dtype import get_default_dtype
from plugins.attention import _check_keys, attention_backward, attention_forward, dropout_probability
from plugins.attention_masks import head_bias
from plugins.core import Linear

__all__ = ["MultiheadAttention"]


def _split(x2: np.ndarray, n: int, h: int, length: int) -> np.ndarray:
    """``(N*L, H*D)`` rows -> the ``(N, H, L, D)`` view of the heads (no copy).

    Each head's ``(L, D)`` matrix has unit stride along ``D``, so BLAS reads it
    in place (its leading dimension being the row length of ``x2``). ``L`` is
    given, not derived from the rows, so an empty batch (``N = 0``) works.
    """
    return x2.reshape(n, length, h, x2.shape[1] // h).transpose(0, 2, 1, 3)


def _project(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``x W^T + b`` of ``(N, L, E_in)`` as one 2-D product: ``(N*L, E_out)``, C-ordered."""
    y = x.reshape(-1, x.shape[-1]) @ w.T
    if b is not None:
        y += b
    return y


class MultiheadAttention(Layer):
    """Multi-head attention (Vaswani et al. 2017) with PyTorch's ``nn.MultiheadAttention`` interface.

    ``Y = concat_h(softmax(Q_h K_h^T / sqrt(D) + B) V_h) W_o^T + b_o`` with
    ``Q = query W_q^T + b_q``, ``K = key W_k^T + b_k``, ``V = value W_v^T + b_v``,
    ``D = embed_dim / num_heads``.

    Call it on one array (self-attention: query = key = value) or on a list
    ``[query, key, value]``. Keyword arguments of a call (fixed values in a
    functional graph, so give masks that change per batch on direct calls):

    - ``key_padding_mask``: ``(N, S)``, boolean (``True`` = ignore that key)
      or float (added to the scores);
    - ``attn_mask``: ``(L, S)`` or ``(N * num_heads, L, S)``, boolean
      (``True`` = not allowed) or float (added);
    - ``is_causal``: mask key ``j > i`` for query ``i``. Unlike PyTorch, where
      it is only a hint about ``attn_mask``, it builds the causal mask itself
      when ``attn_mask`` is ``None``;
    - ``need_weights`` (default ``False``, unlike PyTorch, so the layer has one
      output in a model): return ``(Y, weights)``, the weights averaged over
      heads ``(N, L, S)`` when ``average_attn_weights`` else ``(N, H, L, S)``.
      ``backward`` takes ``dL/dY``, or the pair ``(dL/dY, dL/dweights)``
      (``None`` for no weights gradient), as PyTorch differentiates both.

    A query whose every key is masked attends to nothing: its attention
    output is 0 (so ``Y`` is ``b_o`` there), exactly what PyTorch returns with
    ``need_weights=False``, and no NaN reaches the gradients.

    Args:
        embed_dim: ``E``, the query size and output size.
        num_heads: ``H``; must divide ``embed_dim``.
        dropout: dropout on the attention probabilities in training mode.
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        kdim, vdim: key and value sizes (default ``embed_dim``). When either
            differs, the projections are ``q_proj_weight``, ``k_proj_weight``,
            ``v_proj_weight`` instead of ``in_proj_weight``.
        batch_first: inputs ``(N, L, E)`` (default, unlike PyTorch) or ``(L, N, E)``.

    Shape:
        - Input: query ``(N, L, E)``, key ``(N, S, kdim)``, value ``(N, S, vdim)``.
        - Output: ``(N, L, E)``.

    Attributes:
        in_proj_weight: ``(3E, E)``, Xavier uniform (PyTorch's init).
        in_proj_bias: ``(3E,)``, zeros.
        out_proj: ``Linear(E, E)``, its bias zeros.

    Gradient:
        With ``G_o = dL/dY``: ``out_proj`` gives ``dL/dA`` for the merged heads
        ``A``; split into heads, :func:`~plugins.attention.attention_backward`
        gives ``dQ_h, dK_h, dV_h``; merged back, ``dW_q = dQ^T query``,
        ``db_q = sum dQ``, ``d query = dQ W_q`` (likewise for key and value).
        Self-attention on one array stacks ``[dQ dK dV]`` and does each of the
        three products once with ``in_proj_weight``; ``d x`` is the sum of the
        three paths. See docs/maths/attention.md.

    Example:
        >>> import numpy as np
        >>> from framework.layers import MultiheadAttention
        >>> mha = MultiheadAttention(8, 2)
        >>> mha(np.ones((3, 5, 8), dtype=np.float32), is_causal=True).shape
        (3, 5, 8)
    """

    float_input = True  # an integer or boolean input is cast to the default float dtype

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        owner = "MultiheadAttention"
        self.embed_dim = positive_int(owner, "embed_dim", embed_dim)
        self.num_heads = positive_int(owner, "num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"{owner}: embed_dim must be divisible by num_heads, got embed_dim={embed_dim}, "
                f"num_heads={num_heads}"
            )
        self.dropout = dropout_probability(owner, "dropout", dropout)
        self.use_bias = check_bool(owner, "bias", bias)
        self.kdim = positive_int(owner, "kdim", kdim, allow_none=True) or self.embed_dim
        self.vdim = positive_int(owner, "vdim", vdim, allow_none=True) or self.embed_dim
        self.batch_first = check_bool(owner, "batch_first", batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        e = self.embed_dim
        dtype = get_default_dtype()
        init = _initializer(owner, "weight_init", "xavier_uniform")
        if self._qkv_same_embed_dim:
            self.in_proj_weight: Parameter | None = Parameter(init((3 * e, e), dtype=dtype))
        else:
            self.in_proj_weight = None
            self.q_proj_weight = Parameter(init((e, e), dtype=dtype))
            self.k_proj_weight = Parameter(init((e, self.kdim), dtype=dtype))
            self.v_proj_weight = Parameter(init((e, self.vdim), dtype=dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * e, dtype=dtype)) if self.use_bias else None
        self.out_proj = Linear(e, e, bias=self.use_bias)

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.in_proj_weight is not None:
            w, e = self.in_proj_weight.data, self.embed_dim
            return w[:e], w[e : 2 * e], w[2 * e :]
        return self.q_proj_weight.data, self.k_proj_weight.data, self.v_proj_weight.data

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None  # lengths may change from call to call; forward checks the sizes

    # -- forward -----------------------------------------------------------------

    def _inputs(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        listed = isinstance(x, (list, tuple))
        if listed and len(x) != 3:
            raise ShapeError(
                f"{self.describe()} expects one array or a list [query, key, value], got {len(x)}"
            )
        q, k, v = x if listed else (x, x, x)
        for label, a, size in (("query", q, self.embed_dim), ("key", k, self.kdim), ("value", v, self.vdim)):
            if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[-1] != size:
                layout = "(N, L, {})" if self.batch_first else "(L, N, {})"
                raise ShapeError(
                    f"{self.describe()}: expected {label} of shape {layout.format(size)}, "
                    f"got {format_shape(getattr(a, 'shape', None))}"
                )
        if not self.batch_first:
            q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))
        if q.shape[0] != k.shape[0] or k.shape[:2] != v.shape[:2]:
            raise ShapeError(
                f"{self.describe()}: query, key and value must share the batch size and key and value the "
                f"length; got query {q.shape}, key {k.shape}, value {v.shape} (batch first)"
            )
        _check_keys(self.describe(), k)
        return q, k, v, listed

    def forward(
        self,
        ctx: Context,
        x: Any,
        key_padding_mask: Any = None,
        need_weights: bool = False,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Any:
        q_in, k_in, v_in, listed = self._inputs(x)
        n, length, _ = q_in.shape
        source = k_in.shape[1]
        h, e = self.num_heads, self.embed_dim
        b = self.in_proj_bias.data if self.in_proj_bias is not None else None
        packed = not listed and self.in_proj_weight is not None
        scale = 1.0 / math.sqrt(self.head_dim)
        if packed:  # self-attention: one product for Q, K and V; the heads are views of it
            assert self.in_proj_weight is not None
            # the score scale folded into W_q and b_q: Q comes out as scale * Q, no pass over it
            w_scaled = self.in_proj_weight.data.copy()
            w_scaled[:e] *= w_scaled.dtype.type(scale)
            b_scaled = None if b is None else np.concatenate([b[:e] * b.dtype.type(scale), b[e:]])
            qkv = _project(q_in, w_scaled, b_scaled)
            qh, kh, vh = (_split(qkv[:, i * e : (i + 1) * e], n, h, length) for i in range(3))
        else:
            ws = self._weights()
            qh, kh, vh = (
                _split(_project(a, w, None if b is None else b[i * e : (i + 1) * e]), n, h, rows)
                for i, (a, w, rows) in enumerate(zip((q_in, k_in, v_in), ws, (length, source, source)))
            )
        bias = head_bias(
            self.describe(), h, (n, length, source), qh.dtype, attn_mask, key_padding_mask, is_causal
        )
        drop = self.dropout if ctx.training else 0.0
        # the heads' outputs land straight in the merged (N, L, H, D) = (N*L, E) layout
        merged = np.empty((n * length, e), dtype=qh.dtype)
        # the bias is exactly the causal mask: the blocked causal path may skip its masked half
        # (not when the weights are returned: they need the whole (L, S) matrix)
        causal = is_causal and attn_mask is None and key_padding_mask is None and not need_weights
        _, cache = attention_forward(
            qh,
            kh,
            vh,
            bias,
            1.0 if packed else scale,
            drop,
            record=ctx.record,
            out=_split(merged, n, h, length),
            causal=causal,
            keep_probs=need_weights,
        )
        y = _project(merged, self.out_proj.weight.data, self._out_bias()).reshape(n, length, e)
        if ctx.record:
            ctx.cache, ctx.merged, ctx.listed, ctx.packed = cache, merged, listed, packed
            ctx.w_scaled = w_scaled if packed else None
            ctx.inputs = (q_in, k_in, v_in)
        if not self.batch_first:
            y = y.transpose(1, 0, 2)
        if not need_weights:
            return y
        weights = cache["dropped"].mean(axis=1) if average_attn_weights else cache["dropped"].copy()
        return y, weights.astype(y.dtype, copy=False)  # float16: computed in float32 (attention_forward)

    def _out_bias(self) -> np.ndarray | None:
        return self.out_proj.bias.data if self.out_proj.bias is not None else None

    # -- backward ----------------------------------------------------------------

    def backward(self, ctx: Context, grad_out: Any) -> Any:
        g, grad_weights = grad_out, None
        if isinstance(grad_out, (tuple, list)):
            if len(grad_out) != 2:
                raise ShapeError(
                    f"{self.describe()}: backward takes dL/dY or the pair (dL/dY, dL/dweights), "
                    f"got {len(grad_out)} arrays"
                )
            g, grad_weights = grad_out
        if grad_weights is not None:
            if "dropped" not in ctx.cache:  # the blocked causal path keeps no (L, S) probabilities
                raise ShapeError(
                    f"{self.describe()}: a gradient for the attention weights needs a forward with "
                    "need_weights=True"
                )
            grad_weights = self._per_head(grad_weights, ctx.cache["dropped"])
        if not self.batch_first:
            g = g.transpose(1, 0, 2)
        n, length, e = g.shape
        h = self.num_heads
        g2 = np.ascontiguousarray(g).reshape(n * length, e)
        # out_proj (a Linear kept for its parameters and names): Y = A W_o^T + b_o
        wo = self.out_proj.weight
        wo.add_grad_product(g2.T, ctx.merged)
        if self.out_proj.bias is not None:
            self.out_proj.bias.add_grad(blas.sum_rows(g2))
        da = _split(g2 @ wo.data, n, h, length)
        q_in, k_in, v_in = ctx.inputs
        if ctx.packed:
            assert self.in_proj_weight is not None
            # [dQ dK dV] written by the attention backward straight into (N*L, 3E)
            dqkv = np.empty((n * length, 3 * e), dtype=g2.dtype)
            views = tuple(_split(dqkv[:, i * e : (i + 1) * e], n, h, length) for i in range(3))
            # with Q' = scale Q from the scaled weights, dQ' comes back: dW_q = scale dQ'^T x
            attention_backward(da, ctx.cache, out=views, grad_probs=grad_weights)  # type: ignore[arg-type]
            f = dqkv.dtype.type
            dw = dqkv.T @ q_in.reshape(n * length, e)
            dw[:e] *= f(1.0 / math.sqrt(self.head_dim))
            self.in_proj_weight.add_grad(dw)
            if self.in_proj_bias is not None:
                db = blas.sum_rows(dqkv)
                db[:e] *= f(1.0 / math.sqrt(self.head_dim))
                self.in_proj_bias.add_grad(db)
            if not ctx.needs_input_grad:
                return None
            dx = (dqkv @ ctx.w_scaled).reshape(n, length, e)  # dQ' (scale W_q) = dQ W_q
            return dx if self.batch_first else dx.transpose(1, 0, 2)
        source = k_in.shape[1]
        d2 = [np.empty((n * rows, e), dtype=g2.dtype) for rows in (length, source, source)]
        attention_backward(
            da,
            ctx.cache,
            out=tuple(_split(d, n, h, r) for d, r in zip(d2, (length, source, source))),  # type: ignore[arg-type]
            grad_probs=grad_weights,
        )
        ws = self._weights()
        grads, wgrads, bgrads = [], [], []
        for d, a, w in zip(d2, (q_in, k_in, v_in), ws):
            wgrads.append(d.T @ a.reshape(-1, a.shape[-1]))
            bgrads.append(blas.sum_rows(d))
            dx = (d @ w).reshape(a.shape)
            grads.append(dx if self.batch_first else dx.transpose(1, 0, 2))
        if self.in_proj_weight is not None:
            self.in_proj_weight.add_grad(np.concatenate(wgrads, axis=0))
        else:
            self.q_proj_weight.add_grad(wgrads[0])
            self.k_proj_weight.add_grad(wgrads[1])
            self.v_proj_weight.add_grad(wgrads[2])
        if self.in_proj_bias is not None:
            self.in_proj_bias.add_grad(np.concatenate(bgrads))
        if not ctx.listed:  # one array given for three roles (kdim = vdim = embed_dim is not the case here)
            return grads[0] + grads[1] + grads[2]
        return grads

    def check_graph_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Refuse ``need_weights=True`` in a functional model: its node has one output, not two."""
        if kwargs.get("need_weights"):
            raise ConfigError(
                f"{self.describe()}: need_weights=True returns (output, weights), which a node of a "
                "functional model cannot carry (it has one output); call the layer on arrays to read "
                "its weights, or leave need_weights unset in the model"
            )

    def _per_head(self, grad_weights: Any, probs: np.ndarray) -> np.ndarray:
        """``dL/dweights`` as a ``dL/dP'`` broadcasting to ``(N, H, L, S)`` (averaged: shared by heads)."""
        n, h, length, source = probs.shape
        gw = np.asarray(grad_weights, dtype=probs.dtype)
        if gw.shape == (n, length, source):
            return gw[:, None] / probs.dtype.type(h)
        if gw.shape == (n, h, length, source):
            return gw
        raise ShapeError(
            f"{self.describe()}: expected a weights gradient of shape {(n, length, source)} (averaged over "
            f"heads) or {(n, h, length, source)}, got {gw.shape}"
        )

    # -- shapes and config ---------------------------------------------------------

    def output_shape(self, input_shape: Any) -> Any:
        shapes = input_shape if isinstance(input_shape, list) else [input_shape] * 3
        if len(shapes) != 3:
            raise ShapeError(
                f"{self.describe()} expects [query, key, value], got {format_shape(input_shape)}"
            )
        layout = "(N, {}, {})" if self.batch_first else "({}, N, {})"
        labels = (("query", "L"), ("key", "S"), ("value", "S"))
        for (label, length), s, size in zip(labels, shapes, (self.embed_dim, self.kdim, self.vdim)):
            if len(s) != 3 or s[-1] != size:
                raise ShapeError(
                    f"{self.describe()}: expected {label} of shape {layout.format(length, size)}, "
                    f"got {format_shape(s)}"
                )
        return tuple(shapes[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "bias": self.use_bias,
            "kdim": self.kdim,
            "vdim": self.vdim,
            "batch_first": self.batch_first,
        }
