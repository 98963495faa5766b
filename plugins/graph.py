"""Built-in plugin: graph convolution (Kipf and Welling's GCN layer).

The graph is a property of the layer rather than a second input, because a
``Sequential`` model passes one tensor from layer to layer: give it once with
``layer.set_graph(adjacency)``, or per call with ``layer(x, adjacency=...)``.
The helpers (adjacency forms, normalisation, sparse products) are pure
functions in :mod:`plugins.graph_ops`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import positive_int, resolve_activation, resolve_initializer
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.registry.namespace import serialize
from framework.runtime.dtype import get_default_dtype
from plugins.graph_ops import SparseAdjacency, as_coo, gcn_propagation

__all__ = ["GCNConv", "SparseAdjacency"]


class GCNConv(Layer):
    """Graph convolution (Kipf & Welling 2017): ``H' = act(Â H W^T + b)``.

    ``Â = D^-1/2 (A + I) D^-1/2`` with ``D_ii = sum_j (A + I)_ij``: every node
    averages its own and its neighbours' transformed features, each edge
    ``(i, j)`` weighted by ``1 / sqrt(d_i d_j)``.

    The adjacency ``A`` belongs to the layer, not to the input: set it with
    :meth:`set_graph`, or pass ``forward(x, adjacency=A)``, which uses ``A``
    for that call and stores it as the layer's graph from then on (once it is
    valid for ``x``'s nodes). It is not saved with the layer's config or
    weights. ``A`` may be

    - a dense ``(N, N)`` array (the product then runs as a dense matmul),
    - a :class:`~plugins.graph_ops.SparseAdjacency` ``(indices, values, num_nodes)``,
    - a tuple ``(indices, values)``: ``indices`` ``(2, E)`` integer rows and
      columns, ``values`` ``(E,)`` or ``None`` for ones; ``N`` is ``x.shape[0]``.

    ``A[i, j]`` is the weight of the message from node ``j`` to node ``i``; an
    undirected graph lists each edge both ways. Repeated COO entries add up;
    ``D`` is the row sum (the receivers' weighted in-degree, as PyG's
    ``gcn_norm``). Two differences from PyG's ``GCNConv``: its ``edge_index``
    is (source, target), so a directed PyG graph is ``edge_index[::-1]`` here;
    and a self loop already in ``A`` gets ``+ 1`` like every node (``A + I``),
    where PyG's ``add_remaining_self_loops`` keeps it as it is. Weights must be
    finite; with ``normalize`` every degree must be ``>= 0`` (a node of degree
    0 gets a zero row). Sparse products are segment sums over rows (see
    :mod:`plugins.graph_ops`). ``Â`` is computed once per adjacency object and
    reused; call :meth:`set_graph` again after changing an adjacency array in
    place.

    The layer is in the context form: what backward needs (``Â^T`` and the
    cached product) is kept on the per-call ``ctx``, so one GCNConv may be
    called at several places of a model (its gradients sum) and from several
    threads. A call uses the graph it is given, or else the one stored when
    it starts; ``set_graph`` or ``adjacency=`` from another thread affect
    only the calls that start after them.

    Full batch only: ``needs_full_batch = True``. The adjacency is fixed to
    the node set, row ``i`` of the input being node ``i``, so every call must
    see all ``N`` nodes in their order. The training loop reads the attribute
    and refuses to shuffle or to split the nodes into mini-batches; train with
    ``batch_size=N`` and ``shuffle=False`` and select the training nodes with
    ``sample_weight`` (a mask) instead.

    Args:
        in_features: size of each node's input features.
        out_features: size of each node's output features.
        bias: whether to learn an additive bias (``False`` leaves ``bias`` ``None``).
        activation: an activation name, class or instance, or ``None``.
        add_self_loops: use ``A + I`` (default) rather than ``A``.
        normalize: apply ``D^-1/2 . D^-1/2`` (default); ``False`` uses ``A (+ I)``.
        weight_init: initializer of ``weight`` (default Glorot uniform, as Kipf
            and Welling).
        bias_init: initializer of ``bias`` (default zeros).
        name: layer name.

    Shape:
        - Input: ``(N, in_features)``, one row per node of an ``N``-node graph.
        - Adjacency: ``(N, N)`` dense, or ``E`` COO entries on ``N`` nodes.
        - Output: ``(N, out_features)``.

    Attributes:
        weight: ``Parameter`` ``(out_features, in_features)``, Glorot uniform
            ``U(-b, b)``, ``b = sqrt(6 / (in_features + out_features))``.
        bias: ``Parameter`` ``(out_features,)``, zeros, or ``None``.

    Gradient:
        With ``Z = Â H W^T + b`` and ``G = dL/dZ`` (after the activation's
        backward): ``dL/dW = G^T (Â H) = (Â^T G)^T H``, ``dL/db = sum_i G_i``,
        ``dL/dH = Â^T G W``. ``Â^T`` is used as such, so directed graphs are
        exact. The product with ``Â`` is taken on the narrower side: ``Â (H W^T)``
        when ``out_features < in_features`` (Cora: 1433 -> 16), else ``(Â H) W^T``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import GCNConv
        >>> edges = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> layer = GCNConv(4, 2, activation="relu")
        >>> layer.set_graph((edges, None))
        GCNConv(4, 2, activation='relu')
        >>> layer(np.ones((3, 4), dtype=np.float32)).shape
        (3, 2)
    """

    #: The rows of the input are the graph's nodes: the whole node set, in
    #: order, in every call (no shuffling, no mini-batches).
    needs_full_batch = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: Any = None,
        add_self_loops: bool = True,
        normalize: bool = True,
        weight_init: Any = "xavier_uniform",
        bias_init: Any = "zeros",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.in_features = positive_int("GCNConv", "in_features", in_features)
        self.out_features = positive_int("GCNConv", "out_features", out_features)
        for arg, value in (("bias", bias), ("add_self_loops", add_self_loops), ("normalize", normalize)):
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"GCNConv: {arg} must be True or False, got {value!r}")
        self.use_bias = bool(bias)
        self.activation = resolve_activation("GCNConv", activation)
        self.add_self_loops = bool(add_self_loops)
        self.normalize = bool(normalize)
        self.weight_init = resolve_initializer("GCNConv", "weight_init", weight_init)
        self.bias_init = resolve_initializer("GCNConv", "bias_init", bias_init)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        # (adjacency, its operators by (N, dtype)): replaced whole, never mutated
        # but for the cache, so a call keeps the pair it started with.
        self._graph: tuple[Any, dict[Any, tuple[Any, Any]]] = (None, {})
        self.build((None, self.in_features))

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, tuple) or len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ShapeError(
                f"{self.describe()} expected node features of shape (N, {self.in_features}), "
                f"got {format_shape(input_shape)}"
            )
        dtype = get_default_dtype()
        self.weight = Parameter(self.weight_init((self.out_features, self.in_features), dtype=dtype))
        if self.use_bias:
            self.bias = Parameter(self.bias_init((self.out_features,), dtype=dtype))
        super().build(input_shape)

    # -- the graph ----------------------------------------------------------

    def set_graph(self, adjacency: Any) -> GCNConv:
        """Use ``adjacency`` (dense, :class:`SparseAdjacency` or ``(indices, values)``); returns ``self``.

        Raises:
            ShapeError: a dense adjacency that is not square.
            DataError: negative or non-integer indices, non-finite weights, an unknown form.
        """
        self._graph = self._checked(adjacency, None)
        return self

    def _checked(self, adjacency: Any, num_nodes: int | None) -> tuple[Any, dict[Any, tuple[Any, Any]]]:
        """A new ``(adjacency, cache)`` pair once ``adjacency`` is valid (on ``num_nodes`` nodes)."""
        if adjacency is None:
            raise DataError(f"{self.describe()}: set_graph() needs an adjacency, got None")
        as_coo(adjacency, num_nodes, self.describe())
        return (adjacency, {})

    @property
    def adjacency(self) -> Any:
        """The adjacency as given to :meth:`set_graph` or ``forward`` (``None`` if unset)."""
        return self._graph[0]

    def _operators(self, graph: tuple[Any, dict], num_nodes: int, dtype: np.dtype) -> tuple[Any, Any]:
        """``(Â, Â^T)`` of ``graph`` on ``num_nodes`` nodes, in ``dtype`` (cached in ``graph``)."""
        adjacency, cache = graph
        if adjacency is None:
            raise DataError(
                f"{self.describe()}: no graph; call layer.set_graph(adjacency) or "
                "pass forward(x, adjacency=...)"
            )
        key = (num_nodes, np.dtype(dtype).str)
        ops = cache.get(key)
        if ops is None:
            exact = cache.get((num_nodes, "<f8"))
            if exact is None:
                coo = as_coo(adjacency, num_nodes, self.describe())
                exact = gcn_propagation(coo, self.add_self_loops, self.normalize, self.describe())
                cache[(num_nodes, "<f8")] = exact
            a_hat, a_hat_t = exact
            if isinstance(a_hat, np.ndarray):
                a_hat = a_hat.astype(dtype, copy=False)
                ops = (a_hat, a_hat.T)
            else:
                ops = (a_hat.astype(dtype), a_hat_t.astype(dtype))
            cache[key] = ops
        return ops

    # -- forward / backward ---------------------------------------------------

    def _aggregate_first(self) -> bool:
        """Whether ``Â`` multiplies the input (``(Â H) W^T``) rather than ``H W^T``."""
        return self.in_features <= self.out_features

    def forward(self, ctx: Context, x: np.ndarray, adjacency: Any = None) -> np.ndarray:
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(self.weight.dtype)
        graph = self._graph  # this call's graph, whatever another thread sets meanwhile
        if adjacency is not None and adjacency is not graph[0]:
            graph = self._graph = self._checked(adjacency, x.shape[0])  # stored once valid here
        a_hat, ctx.a_hat_t = self._operators(graph, x.shape[0], x.dtype)
        weight = self.weight.data
        if self._aggregate_first():
            cached = ctx.cached = a_hat @ x  # Â H, (N, in_features)
            z = cached @ weight.T
        else:
            ctx.cached = x  # H, (N, in_features)
            z = a_hat @ (x @ weight.T)
        if self.bias is not None:
            z += self.bias.data
        return self.activation_forward(ctx, self.activation, z)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray | None:
        g = self.activation_backward(ctx, self.activation, grad_out)
        if self.bias is not None:
            self.bias.add_grad(g.sum(axis=0))
        weight = self.weight.data
        if self._aggregate_first():
            self.weight.add_grad(g.T @ ctx.cached)
            if not ctx.needs_input_grad:
                return None
            return ctx.a_hat_t @ (g @ weight)
        propagated = ctx.a_hat_t @ g
        self.weight.add_grad(propagated.T @ ctx.cached)
        if not ctx.needs_input_grad:
            return None
        return propagated @ weight

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ShapeError(
                f"{self.describe()} expected node features of shape (N, {self.in_features}), "
                f"got {format_shape(input_shape)}"
            )
        return (input_shape[0], self.out_features)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.use_bias,
            "activation": serialize("activations", self.activation),
            "add_self_loops": self.add_self_loops,
            "normalize": self.normalize,
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        parts = [str(self.in_features), str(self.out_features)]
        if self.activation is not None:
            parts.append(f"activation={serialize('activations', self.activation)!r}")
        if not self.use_bias:
            parts.append("bias=False")
        if not self.add_self_loops:
            parts.append("add_self_loops=False")
        if not self.normalize:
            parts.append("normalize=False")
        return ", ".join(parts)


@hookimpl
def register_layers(register: Any) -> None:
    register(GCNConv)
