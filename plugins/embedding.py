"""Built-in plugin: the Embedding layer (a learned lookup table, PyTorch's ``nn.Embedding``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.parameter import Parameter
from framework.base.validation import positive_int, resolve_initializer
from framework.errors import ConfigError, DataError
from framework.registry.hookspecs import hookimpl
from framework.registry.namespace import serialize
from framework.runtime.dtype import get_default_dtype

__all__ = ["Embedding", "scatter_add_rows"]


def scatter_add_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows[k]] += values[k]`` for every ``k``, repeated rows summed, in place.

    Equivalent to ``np.add.at(target, rows, values)`` but about twice as fast:
    the rows are sorted once, ``np.add.reduceat`` sums each run of equal rows,
    and the sums are added to distinct rows with one fancy-indexed ``+=``.

    Args:
        target: ``(V, D)`` array updated in place.
        rows: ``(M,)`` integer row of each value.
        values: ``(M, D)``.
    """
    if rows.size == 0:
        return
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    target[sorted_rows[starts]] += np.add.reduceat(values[order], starts, axis=0)


class Embedding(Layer):
    """A lookup table of ``num_embeddings`` learned vectors: ``y[..., :] = W[x[...], :]``.

    Each integer index in the input selects one row of ``weight``; the output
    has the input's shape with ``embedding_dim`` appended. The input may have
    any shape ``(N, *)``: token ids ``(N, L)``, one id per sample ``(N,)``...

    Indices must be integers in ``[0, num_embeddings)``. A floating-point
    array holding whole numbers is accepted as well (a model that casts its
    inputs, or a gradient check, passes floats); any other value is an error.

    Args:
        num_embeddings: size of the table ``V`` (number of distinct indices).
        embedding_dim: size ``D`` of each vector.
        padding_idx: an index whose row is zero-initialised and never updated
            (its gradient stays zero), for padding tokens; negative values
            count from the end as in PyTorch. ``None`` for none.
        weight_init: initializer of ``weight`` (default ``"normal"``,
            ``N(0, 1)`` as PyTorch).
        name: layer name.

    Shape:
        - Input: ``(N, *)`` integer indices.
        - Output: ``(N, *, embedding_dim)``.

    Attributes:
        weight: ``Parameter`` ``(num_embeddings, embedding_dim)``, ``N(0, 1)``
            by default, row ``padding_idx`` zeros.

    Gradient:
        ``dL/dW_v = sum over positions p with x_p = v of dL/dy_p``: the output
        gradients are scatter-added into the rows they came from (repeated
        indices accumulate; see :func:`scatter_add_rows`), except into row
        ``padding_idx``. The indices are not differentiable: ``backward``
        returns ``None`` as the input gradient, so an Embedding must be the
        first layer of a model (or its input must come from data).

    Weight tying:
        ``weight`` has the layout of the weight of a
        ``Linear(embedding_dim, num_embeddings, bias=False)`` output layer, so
        the two share one table by sharing the ``Parameter`` object:
        ``head.weight = embedding.weight``. Both backwards add into the one
        gradient (the scatter-add here, ``G^T X`` there), the optimizer steps
        it once and a checkpoint stores it once.

    Example:
        >>> import numpy as np
        >>> from framework.layers import Embedding
        >>> layer = Embedding(10, 3, padding_idx=0)
        >>> layer(np.array([[1, 2, 0], [4, 0, 0]])).shape
        (2, 3, 3)
    """

    #: A model keeps integer inputs as they are when this layer comes first.
    accepts_integer_input = True

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        weight_init: Any = "normal",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if (
                isinstance(padding_idx, bool)
                or not isinstance(padding_idx, (int, np.integer))
                or not -self.num_embeddings <= padding_idx < self.num_embeddings
            ):
                raise ConfigError(
                    f"Embedding: padding_idx must be an integer in [{-self.num_embeddings}, "
                    f"{self.num_embeddings}) or None, got {padding_idx!r}"
                )
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.weight_init = resolve_initializer("Embedding", "weight_init", weight_init)
        # The table exists from the start (its size is known), but the layer stays
        # unbuilt: the index shape (one id, a sequence of L ids...) comes from the data.
        weight = self.weight_init((self.num_embeddings, self.embedding_dim), dtype=get_default_dtype())
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0
        self.weight = Parameter(weight)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None  # any shape (N, *) of indices

    def _indices(self, x: Any) -> np.ndarray:
        """``x`` as an int64 array after checking the values are whole and in range."""
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            whole = np.isfinite(x) & (x == np.floor(x))
            if not whole.all():
                bad = x[~whole].flat[0].item()
                raise DataError(
                    f"{self.describe()}: indices must be integers in [0, {self.num_embeddings}), got {bad!r}"
                )
        elif not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"{self.describe()}: indices must be an integer array, got dtype {x.dtype}")
        if x.ndim == 0:
            raise DataError(f"{self.describe()}: indices must have a batch axis (N, *), got a scalar")
        if x.size:
            low, high = x.min(), x.max()
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise DataError(
                    f"{self.describe()}: index {int(bad)} is out of range [0, {self.num_embeddings}) "
                    f"(num_embeddings={self.num_embeddings})"
                )
        return x.astype(np.int64, copy=False)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        idx = ctx.idx = self._indices(x)
        return self.weight.data[idx]

    def backward(self, ctx: Context, grad_out: np.ndarray) -> None:
        rows = ctx.idx.reshape(-1)
        grads = grad_out.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = rows != self.padding_idx
            rows, grads = rows[keep], grads[keep]
        # ``grad`` (not ``grad_target``): the rows not looked up must hold zeros, or what
        # another user of a tied weight has already added
        scatter_add_rows(self.weight.grad, rows, grads)
        return None

    def output_shape(self, input_shape: Any) -> Any:
        return (*input_shape, self.embedding_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
            "weight_init": serialize("initializers", self.weight_init),
        }

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


@hookimpl
def register_layers(register: Any) -> None:
    register(Embedding)
