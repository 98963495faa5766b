"""``TransformerEncoderLayer`` and ``TransformerDecoderLayer`` with PyTorch's submodule names.

Each block calls its child layers (``self_attn``, ``linear1``, ``norm1``...)
with sub-contexts of its own call (``ctx.child(name)``) and runs their
backwards in reverse order, so the block's gradient is the composition of
the children's hand-derived ones; the residual additions sum the gradients of
their two paths. ``state_dict()`` keys are PyTorch's (``self_attn.in_proj_weight``,
``linear1.weight``, ``norm2.bias``...), so a PyTorch block's weights load by name.

Registered by the ``plugins.transformer`` entry point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.validation import check_bool, positive_int, positive_number
from framework.base.validation import resolve_activation as _activation
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.namespace import serialize
from plugins.attention import dropout_probability
from plugins.core import Dropout, Linear
from plugins.initializers import KaimingUniform
from plugins.layer_norm import LayerNorm
from plugins.multihead_attention import MultiheadAttention

__all__ = ["SequenceDropout", "TransformerDecoderLayer", "TransformerEncoderLayer"]


class SequenceDropout(Dropout):
    """``Dropout`` that accepts any sequence length (a child of the blocks, not registered)."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None


def _torch_linear(n_in: int, n_out: int, bias: bool) -> Linear:
    """A Linear with PyTorch's default weight init (``kaiming_uniform(a=sqrt 5)``: ``U(+-1/sqrt(in))``)."""
    return Linear(n_in, n_out, bias=bias, weight_init=KaimingUniform(a=math.sqrt(5.0)))


class _Block(Layer):
    """What both blocks share: validation, the feed-forward sub-block and the attention sub-blocks."""

    _kind = "TransformerLayer"
    float_input = True  # an integer or boolean input is cast to the default float dtype

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        owner = type(self).__name__
        self.d_model = positive_int(owner, "d_model", d_model)
        self.nhead = positive_int(owner, "nhead", nhead)
        if d_model % nhead:  # both validated as positive ints just above
            raise ConfigError(
                f"{owner}: d_model must be divisible by nhead, got d_model={d_model}, nhead={nhead} "
                f"(each of the {nhead} heads gets d_model / nhead features)"
            )
        self.dim_feedforward = positive_int(owner, "dim_feedforward", dim_feedforward)
        self.dropout_p = dropout_probability(owner, "dropout", dropout)
        if activation is None:
            raise ConfigError(f"{owner}: activation must be an activation name such as 'relu' or 'gelu'")
        self.activation = _activation(owner, activation)
        self.layer_norm_eps = positive_number(owner, "layer_norm_eps", layer_norm_eps)
        self.batch_first = check_bool(owner, "batch_first", batch_first)
        self.norm_first = check_bool(owner, "norm_first", norm_first)
        self.use_bias = check_bool(owner, "bias", bias)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias, batch_first=batch_first)
        self.linear1 = _torch_linear(d_model, dim_feedforward, bias)
        self.dropout = SequenceDropout(dropout)
        self.linear2 = _torch_linear(dim_feedforward, d_model, bias)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = SequenceDropout(dropout)
        self.dropout2 = SequenceDropout(dropout)

    def _check(self, x: Any, label: str) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[-1] != self.d_model:
            layout = "(N, L, {})" if self.batch_first else "(L, N, {})"
            raise ShapeError(
                f"{self.describe()}: expected {label} of shape {layout.format(self.d_model)}, "
                f"got {format_shape(getattr(x, 'shape', None))}"
            )

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None  # sequence lengths may change; forward checks d_model

    # -- sub-blocks: forward and backward side by side -------------------------------

    @staticmethod
    def _run(ctx: Context, layers: list[tuple[str, Layer]], x: Any) -> Any:
        for key, layer in layers:
            x = layer.forward(ctx.child(key), x)
        return x

    @staticmethod
    def _back(ctx: Context, layers: list[tuple[str, Layer]], g: Any) -> Any:
        for key, layer in reversed(layers):
            g = layer.backward(ctx.child(key), g)
        return g

    def _ff(self) -> list[tuple[str, Layer]]:
        last = "dropout3" if hasattr(self, "dropout3") else "dropout2"
        return [
            ("linear1", self.linear1),
            ("activation", self.activation),
            ("dropout", self.dropout),
            ("linear2", self.linear2),
            (last, getattr(self, last)),
        ]

    def _feed_forward(self, ctx: Context, a: np.ndarray) -> np.ndarray:
        """The feed-forward sub-block on the tokens as ``(N*L, d_model)`` rows.

        Each Linear then does one 2-D product (about twice as fast as NumPy's
        per-sample loop for a 3-D input) and returns its output in the layout
        BLAS writes fastest.
        """
        y = self._run(ctx, self._ff(), a.reshape(-1, a.shape[-1]))
        return y.reshape(a.shape)

    def _feed_forward_back(self, ctx: Context, g: np.ndarray) -> np.ndarray:
        dx = self._back(ctx, self._ff(), g.reshape(-1, g.shape[-1]))
        return dx.reshape(g.shape)

    def _attend(
        self, ctx: Context, key: str, drop: str, x: Any, masks: tuple[str, Any, str, Any], causal: bool
    ) -> np.ndarray:
        """``drop(key(x))``; ``masks`` is ``(name, attn_mask, name, key_padding_mask)``, named as called."""
        attn: MultiheadAttention = getattr(self, key)
        mask_name, attn_mask, padding_name, padding = masks
        try:
            y = attn.forward(
                ctx.child(key), x, attn_mask=attn_mask, key_padding_mask=padding, is_causal=causal
            )
        except (ShapeError, DataError) as exc:  # name this block and the keywords as the caller gave them
            raise type(exc)(
                f"{self.describe()}, in {key} (attn_mask = {mask_name}, "
                f"key_padding_mask = {padding_name}): {exc}"
            ) from exc
        return getattr(self, drop).forward(ctx.child(drop), y)

    def _attend_back(self, ctx: Context, key: str, drop: str, g: np.ndarray) -> Any:
        g = getattr(self, drop).backward(ctx.child(drop), g)
        return getattr(self, key).backward(ctx.child(key), g)

    def _residual(self, ctx: Context, norm: str, x: np.ndarray, branch: Any) -> np.ndarray:
        """``x + f(norm(x))`` (pre-norm) or ``norm(x + f(x))`` (post-norm); ``branch(ctx, input)``."""
        layer: LayerNorm = getattr(self, norm)
        if self.norm_first:
            return x + branch(layer.forward(ctx.child(norm), x))
        return layer.forward(ctx.child(norm), x + branch(x))

    def _residual_back(self, ctx: Context, norm: str, g: np.ndarray, branch_back: Any) -> np.ndarray:
        """The gradient of :meth:`_residual`: both paths of the sum add up."""
        layer: LayerNorm = getattr(self, norm)
        if self.norm_first:
            return g + layer.backward(ctx.child(norm), branch_back(g))
        g = layer.backward(ctx.child(norm), g)
        return g + branch_back(g)

    def output_shape(self, input_shape: Any) -> Any:
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        if len(shape) != 3 or shape[-1] != self.d_model:
            layout = "(N, L, {})" if self.batch_first else "(L, N, {})"
            raise ShapeError(
                f"{self.describe()} expected input of shape {layout.format(self.d_model)}, "
                f"got {format_shape(shape)}"
            )
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "nhead": self.nhead,
            "dim_feedforward": self.dim_feedforward,
            "dropout": self.dropout_p,
            "activation": serialize("activations", self.activation),
            "layer_norm_eps": self.layer_norm_eps,
            "batch_first": self.batch_first,
            "norm_first": self.norm_first,
            "bias": self.use_bias,
        }


class TransformerEncoderLayer(_Block):
    """One Transformer encoder block: self-attention then feed-forward, each with a residual and LayerNorm.

    Post-norm (default, as the paper and PyTorch): ``h = norm1(x + SA(x))``,
    ``y = norm2(h + FF(h))``. Pre-norm (``norm_first=True``):
    ``h = x + SA(norm1(x))``, ``y = h + FF(norm2(h))``. ``SA`` is
    ``dropout1(self_attn(x, x, x))``, ``FF`` is
    ``dropout2(linear2(dropout(activation(linear1(x)))))``.

    Call keywords (PyTorch's): ``src_mask`` (``attn_mask`` of
    :class:`~plugins.multihead_attention.MultiheadAttention`, boolean ``True`` =
    masked or float), ``src_key_padding_mask`` ``(N, S)``, ``is_causal``.

    Args:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
        batch_first, norm_first, bias: as PyTorch (``batch_first`` defaults to
        ``True`` here).

    Shape:
        - Input: ``(N, L, d_model)``; Output: the same.

    Gradient:
        Each child's backward in reverse order; a residual ``x + f(x)`` passes
        ``g + f'(x)^T g``; LayerNorm's is
        ``r/D (D dxhat - sum dxhat - xhat sum(dxhat xhat))`` (docs/maths/attention.md).

    Example:
        >>> import numpy as np
        >>> from framework.layers import TransformerEncoderLayer
        >>> block = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
        >>> block(np.ones((2, 5, 8), dtype=np.float32)).shape
        (2, 5, 8)
    """

    def forward(
        self,
        ctx: Context,
        x: np.ndarray,
        src_mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
    ) -> np.ndarray:
        self._check(x, "src")

        def sa(h: np.ndarray) -> np.ndarray:
            masks = ("src_mask", src_mask, "src_key_padding_mask", src_key_padding_mask)
            return self._attend(ctx, "self_attn", "dropout1", h, masks, is_causal)

        h = self._residual(ctx, "norm1", x, sa)
        y = self._residual(ctx, "norm2", h, lambda a: self._feed_forward(ctx, a))
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = self._residual_back(ctx, "norm2", grad_out, lambda a: self._feed_forward_back(ctx, a))
        return self._residual_back(
            ctx, "norm1", g, lambda a: self._attend_back(ctx, "self_attn", "dropout1", a)
        )


class TransformerDecoderLayer(_Block):
    """One Transformer decoder block: self-attention, cross-attention on ``memory``, feed-forward.

    Called on ``[tgt, memory]``. Post-norm: ``h = norm1(t + SA(t))``,
    ``h = norm2(h + CA(h, memory))``, ``y = norm3(h + FF(h))``; pre-norm
    (``norm_first=True``) puts each norm on the branch input instead.
    Keywords (PyTorch's): ``tgt_mask``, ``memory_mask``,
    ``tgt_key_padding_mask``, ``memory_key_padding_mask``, ``tgt_is_causal``,
    ``memory_is_causal``. Submodules: ``self_attn``, ``multihead_attn``,
    ``linear1``, ``linear2``, ``norm1``..``norm3``, ``dropout1``..``dropout3``.

    Args:
        as :class:`TransformerEncoderLayer`.

    Shape:
        - Input: ``[(N, T, d_model), (N, S, d_model)]``; Output: ``(N, T, d_model)``.

    Gradient:
        As the encoder block; ``memory`` receives the key and value gradients
        of the cross-attention, ``backward`` returns ``[d tgt, d memory]``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation,
            layer_norm_eps,
            batch_first,
            norm_first,
            bias,
            name=name,
        )
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias, batch_first=batch_first)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout3 = SequenceDropout(dropout)

    def forward(
        self,
        ctx: Context,
        x: list[np.ndarray],
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> np.ndarray:
        if not isinstance(x, (list, tuple)) or len(x) != 2:
            raise ShapeError(f"{self.describe()} expects a list [tgt, memory], got {type(x).__name__}")
        tgt, memory = x
        self._check(tgt, "tgt")
        self._check(memory, "memory")
        axis = 0 if self.batch_first else 1
        if tgt.shape[axis] != memory.shape[axis]:
            raise ShapeError(
                f"{self.describe()}: tgt and memory must have the same batch size (axis {axis}), "
                f"got tgt {tgt.shape} and memory {memory.shape}"
            )

        def sa(h: np.ndarray) -> np.ndarray:
            masks = ("tgt_mask", tgt_mask, "tgt_key_padding_mask", tgt_key_padding_mask)
            return self._attend(ctx, "self_attn", "dropout1", h, masks, tgt_is_causal)

        def ca(h: np.ndarray) -> np.ndarray:
            masks = ("memory_mask", memory_mask, "memory_key_padding_mask", memory_key_padding_mask)
            return self._attend(
                ctx, "multihead_attn", "dropout2", [h, memory, memory], masks, memory_is_causal
            )

        h = self._residual(ctx, "norm1", tgt, sa)
        h = self._residual(ctx, "norm2", h, ca)
        y = self._residual(ctx, "norm3", h, lambda a: self._feed_forward(ctx, a))
        return y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        g = self._residual_back(ctx, "norm3", grad_out, lambda a: self._feed_forward_back(ctx, a))
        dmem: list[np.ndarray] = []

        def ca_back(a: np.ndarray) -> np.ndarray:
            dq, dk, dv = self._attend_back(ctx, "multihead_attn", "dropout2", a)
            dmem.append(dk + dv)
            return dq

        g = self._residual_back(ctx, "norm2", g, ca_back)
        g = self._residual_back(ctx, "norm1", g, lambda a: self._attend_back(ctx, "self_attn", "dropout1", a))
        return [g, dmem[0]]

    def output_shape(self, input_shape: Any) -> Any:
        if not isinstance(input_shape, list) or len(input_shape) != 2:
            raise ShapeError(f"{self.describe()} expects [tgt, memory], got {format_shape(input_shape)}")
        super().output_shape(input_shape[1])
        return super().output_shape(input_shape[0])
