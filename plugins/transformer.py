"""Built-in plugin: attention and Transformer layers (the ``plugins.transformer`` entry point).

This module holds the stacks ``TransformerEncoder`` / ``TransformerDecoder``
and ``PositionalEncoding``, and registers every layer of the family:

- :mod:`plugins.attention`: ``ScaledDotProductAttention`` (and the maths);
- :mod:`plugins.multihead_attention`: ``MultiheadAttention``;
- :mod:`plugins.transformer_layers`: ``TransformerEncoderLayer``, ``TransformerDecoderLayer``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.validation import check_bool, positive_int
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.registry.namespace import resolve, serialize
from framework.runtime.dtype import get_default_dtype
from plugins.attention import ScaledDotProductAttention, dropout_probability
from plugins.multihead_attention import MultiheadAttention
from plugins.transformer_layers import SequenceDropout, TransformerDecoderLayer, TransformerEncoderLayer

__all__ = [
    "MultiheadAttention",
    "PositionalEncoding",
    "ScaledDotProductAttention",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]


def _clones(owner: str, layer: Any, kind: type, num_layers: int) -> list[Layer]:
    block = resolve("layers", layer)
    if not isinstance(block, kind):
        raise ConfigError(f"{owner}: expected a {kind.__name__} (or its config), got {layer!r}")
    positive_int(owner, "num_layers", num_layers)
    # PyTorch deep-copies the block: every layer starts from the same weights
    return [copy.deepcopy(block) for _ in range(num_layers)]


class _Stack(Layer):
    float_input = True  # an integer or boolean input is cast to the default float dtype

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None

    def output_shape(self, input_shape: Any) -> Any:
        return self.layers[0].output_shape(input_shape)

    def _norm_forward(self, ctx: Context, y: np.ndarray) -> np.ndarray:
        return y if self.norm is None else self.norm.forward(ctx.child("norm"), y)

    def _norm_backward(self, ctx: Context, g: np.ndarray) -> np.ndarray:
        return g if self.norm is None else self.norm.backward(ctx.child("norm"), g)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            self._block_arg: serialize("layers", self.layers[0]),
            "num_layers": self.num_layers,
            "norm": serialize("layers", self.norm),
        }


class TransformerEncoder(_Stack):
    """A stack of ``num_layers`` copies of ``encoder_layer``, then an optional ``norm``.

    State-dict keys are PyTorch's: ``layers.0.self_attn.in_proj_weight``, ...,
    ``norm.weight``. As in PyTorch, the copies start from the same weights.

    Args:
        encoder_layer: a :class:`TransformerEncoderLayer` (or its config).
        num_layers: how many blocks.
        norm: a layer applied to the output (``LayerNorm(d_model)`` for a
            pre-norm stack), or ``None``.

    Call keywords: ``mask``, ``src_key_padding_mask``, ``is_causal``, passed to every block.
    Padded positions get the values the blocks compute for them, as PyTorch's stack gives
    while it records gradients; its inference fast path (nested tensors, under
    ``torch.no_grad()``) returns zeros there instead.

    Shape:
        - Input: ``(N, L, d_model)``; Output: the same.

    Gradient:
        The blocks' backwards in reverse order (each in its own sub-context).
    """

    _block_arg = "encoder_layer"

    def __init__(
        self, encoder_layer: Any, num_layers: int, norm: Any = None, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.layers = _clones("TransformerEncoder", encoder_layer, TransformerEncoderLayer, num_layers)
        self.num_layers = len(self.layers)
        self.norm = resolve("layers", norm)

    def forward(
        self,
        ctx: Context,
        x: np.ndarray,
        mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
    ) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            x = layer.forward(
                ctx.child(i), x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal
            )
        return self._norm_forward(ctx, x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = self._norm_backward(ctx, grad_out)
        for i in reversed(range(self.num_layers)):
            g = self.layers[i].backward(ctx.child(i), g)
        return g


class TransformerDecoder(_Stack):
    """A stack of ``num_layers`` copies of ``decoder_layer`` over one ``memory``, then an optional ``norm``.

    Called on ``[tgt, memory]``; keywords as :class:`TransformerDecoderLayer`
    (``tgt_mask``, ``memory_mask``, ``tgt_key_padding_mask``,
    ``memory_key_padding_mask``, ``tgt_is_causal``, ``memory_is_causal``).

    Shape:
        - Input: ``[(N, T, d_model), (N, S, d_model)]``; Output: ``(N, T, d_model)``.

    Gradient:
        The blocks' backwards in reverse order; ``d memory`` is the sum of
        every block's cross-attention key and value gradients.
    """

    _block_arg = "decoder_layer"

    def __init__(
        self, decoder_layer: Any, num_layers: int, norm: Any = None, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.layers = _clones("TransformerDecoder", decoder_layer, TransformerDecoderLayer, num_layers)
        self.num_layers = len(self.layers)
        self.norm = resolve("layers", norm)

    def forward(self, ctx: Context, x: list[np.ndarray], **kwargs: Any) -> np.ndarray:
        if not isinstance(x, (list, tuple)) or len(x) != 2:
            raise ShapeError(f"{self.describe()} expects a list [tgt, memory], got {type(x).__name__}")
        tgt, memory = x
        for i, layer in enumerate(self.layers):
            tgt = layer.forward(ctx.child(i), [tgt, memory], **kwargs)
        return self._norm_forward(ctx, tgt)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        g = self._norm_backward(ctx, grad_out)
        dmem = None
        for i in reversed(range(self.num_layers)):
            g, dm = self.layers[i].backward(ctx.child(i), g)
            dmem = dm if dmem is None else dmem + dm
        return [g, dmem]


class PositionalEncoding(Layer):
    """Adds the sinusoidal position code of Vaswani et al. (2017), then dropout.

    ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(t / 10000^(2i/d))``;
    ``y = dropout(x + PE[:L])``. The table is a constant, not a parameter (it
    is not in ``state_dict()``).

    Args:
        d_model: the feature size ``d``.
        max_len: the longest sequence (default 5000).
        dropout: dropout probability after the addition (default 0.1).
        batch_first: inputs ``(N, L, d)`` (default) or ``(L, N, d)``.

    Shape:
        - Input: ``(N, L, d_model)`` with ``L <= max_len``; Output: the same.

    Gradient:
        ``dL/dx = dropout'(dL/dy)``: the code is a constant.
    """

    float_input = True  # an integer or boolean input is cast to the default float dtype

    def __init__(
        self,
        d_model: int,
        max_len: int = 5000,
        dropout: float = 0.1,
        batch_first: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.d_model = positive_int("PositionalEncoding", "d_model", d_model)
        self.max_len = positive_int("PositionalEncoding", "max_len", max_len)
        self.batch_first = check_bool("PositionalEncoding", "batch_first", batch_first)
        self.dropout = SequenceDropout(dropout_probability("PositionalEncoding", "dropout", dropout))
        position = np.arange(self.max_len, dtype=np.float64)[:, None]
        div = np.exp(np.arange(0, self.d_model, 2, dtype=np.float64) * (-math.log(10000.0) / self.d_model))
        pe = np.zeros((self.max_len, self.d_model))
        pe[:, 0::2] = np.sin(position * div)
        pe[:, 1::2] = np.cos(position * div[: self.d_model // 2])
        self._pe = pe

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None

    def _layout(self) -> str:
        return f"(N, L, {self.d_model})" if self.batch_first else f"(L, N, {self.d_model})"

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(
                f"{self.describe()} expected input of shape {self._layout()}, "
                f"got {format_shape(getattr(x, 'shape', None))}"
            )
        length = x.shape[1] if self.batch_first else x.shape[0]
        if length > self.max_len:
            raise ShapeError(f"{self.describe()}: sequence length {length} exceeds max_len={self.max_len}")
        # an integer or boolean input is promoted as NumPy would: the table is never truncated
        dtype = x.dtype if x.dtype.kind == "f" else np.result_type(x.dtype, get_default_dtype())
        pe = self._pe[:length].astype(dtype, copy=False)
        y = x + (pe if self.batch_first else pe[:, None, :])
        return self.dropout.forward(ctx.child("dropout"), y)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return self.dropout.backward(ctx.child("dropout"), grad_out)

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) != 3 or input_shape[-1] != self.d_model:
            raise ShapeError(
                f"{self.describe()} expected input of shape {self._layout()}, got {format_shape(input_shape)}"
            )
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "max_len": self.max_len,
            "dropout": self.dropout.p,
            "batch_first": self.batch_first,
        }


@hookimpl
def register_layers(register: Any) -> None:
    """The attention layers, the Transformer blocks and stacks, PositionalEncoding."""
    register(MultiheadAttention)
    register(ScaledDotProductAttention)
    register(TransformerEncoderLayer)
    register(TransformerDecoderLayer)
    register(TransformerEncoder)
    register(TransformerDecoder)
    register(PositionalEncoding)
