"""Pure functions for graph convolution: adjacency forms, GCN normalisation, sparse products.

A graph on ``N`` nodes is given either as a dense ``(N, N)`` array ``A`` or as a
COO list of its non-zero entries: ``indices`` ``(2, E)`` (row ``i``, column
``j``) and ``values`` ``(E,)``, meaning ``A[i, j] += values[e]`` (repeated
pairs add up, as in a dense sum). No scipy is needed.

:func:`gcn_normalize_dense` and :func:`gcn_normalize_coo` build Kipf and
Welling's propagation matrix

    Â = D^-1/2 (A + I) D^-1/2,   D_ii = sum_j (A + I)_ij,

and :class:`CSRMatrix` multiplies it (and its transpose) with a feature matrix
by a segment sum over rows: the entries are sorted by row once, each product
gathers ``values[e] * H[col[e]]`` for every edge at once and
``np.add.reduceat`` sums each row's segment. On Cora (13 264 entries with the
self loops, 16 features) this is about 2x faster than ``np.add.at`` and 6x
faster than a dense ``(N, N)`` product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.errors import DataError, ShapeError

__all__ = [
    "SparseAdjacency",
    "CSRMatrix",
    "as_coo",
    "gcn_normalize_dense",
    "gcn_normalize_coo",
    "coo_to_csr",
    "csr_matmul",
    "gcn_propagation",
]


class SparseAdjacency:
    """A scipy-free sparse adjacency matrix in COO form.

    ``A[indices[0, e], indices[1, e]] += values[e]`` for every edge ``e``; the
    matrix is ``(num_nodes, num_nodes)``. For an undirected graph list each
    edge in both directions (as Cora's edge index does).

    Args:
        indices: integer array ``(2, E)``: rows ``i`` (the receivers) and
            columns ``j`` (the senders); ``A[i, j]`` weighs the message from
            node ``j`` to node ``i``. PyG's ``edge_index`` lists (source,
            target), so a directed PyG graph is ``edge_index[::-1]`` here.
        values: edge weights ``(E,)`` (real; booleans count as 0/1); ``None`` means all ones.
        num_nodes: ``N``; ``None`` infers ``max(indices) + 1``.
        owner: how error messages name the caller (a layer passes its own name).

    Raises:
        ShapeError: ``indices`` not ``(2, E)`` or ``values`` not ``(E,)``.
        DataError: non-integer or out-of-range indices, non-finite or non-real values.

    Example:
        >>> import numpy as np
        >>> adj = SparseAdjacency(np.array([[0, 1], [1, 0]]), num_nodes=3)
        >>> adj.to_dense()
        array([[0., 1., 0.],
               [1., 0., 0.],
               [0., 0., 0.]])
    """

    def __init__(
        self,
        indices: Any,
        values: Any = None,
        num_nodes: int | None = None,
        *,
        owner: str = "SparseAdjacency",
    ) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.shape[0] != 2:
            raise ShapeError(f"{owner}: indices must have shape (2, E) (rows, columns), got {indices.shape}")
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            if (
                not np.issubdtype(indices.dtype, np.floating)
                or not np.all(np.isfinite(indices))
                or not np.all(indices == np.round(indices))
            ):
                raise DataError(f"{owner}: indices must be integers, got dtype {indices.dtype}")
        if num_nodes is None:
            num_nodes = int(indices.max()) + 1 if indices.size else 0
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
            raise DataError(f"{owner}: num_nodes must be a non-negative integer, got {num_nodes!r}")
        num_nodes = int(num_nodes)
        _check_range(owner, indices, num_nodes)  # before the cast: uint64 would wrap
        indices = indices.astype(np.int64)
        n_edges = indices.shape[1]
        if values is None:
            values = np.ones(n_edges, dtype=np.float64)
        values = np.asarray(values)
        if values.shape != (n_edges,):
            raise ShapeError(
                f"{owner}: values must have shape ({n_edges},) (one per edge), got {values.shape}"
            )
        self.indices = indices
        self.values = _real_finite(owner, "edge weights (values)", values)
        self.num_nodes = num_nodes

    @classmethod
    def from_dense(cls, adjacency: Any) -> SparseAdjacency:
        """The non-zero entries of a dense square matrix."""
        a = np.asarray(adjacency)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ShapeError(f"SparseAdjacency.from_dense: expected a square (N, N) array, got {a.shape}")
        rows, cols = np.nonzero(a)
        return cls(np.stack([rows, cols]), a[rows, cols], a.shape[0])

    def to_dense(self, dtype: Any = np.float64) -> np.ndarray:
        """The ``(N, N)`` array (repeated pairs summed)."""
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=dtype)
        np.add.at(a, (self.indices[0], self.indices[1]), self.values.astype(dtype))
        return a

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[1])

    def __repr__(self) -> str:
        return f"SparseAdjacency(num_nodes={self.num_nodes}, num_edges={self.num_edges})"


def _real_finite(owner: str, what: str, array: np.ndarray) -> np.ndarray:
    """``array`` as float64; a DataError naming the first non-finite entry, or a non-real dtype."""
    if array.dtype != bool and not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(f"{owner}: {what} must be real numbers, got dtype {array.dtype}")
    out = array.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        where = tuple(int(k[0]) for k in np.nonzero(bad))
        at = f"edge {where[0]}" if out.ndim == 1 else f"entry {list(where)}"
        raise DataError(f"{owner}: {what} must be finite; {at} is {out[where]}")
    return out


def _check_range(owner: str, indices: np.ndarray, num_nodes: int) -> None:
    if not indices.size:
        return
    bad = (indices < 0) | (indices >= num_nodes)
    if bad.any():
        axis, e = (int(k[0]) for k in np.nonzero(bad))
        raise DataError(
            f"{owner}: node index {int(indices[axis, e])} (indices[{axis}, {e}]) is out of range "
            f"[0, {num_nodes}) for a graph of {num_nodes} nodes"
        )


def as_coo(
    adjacency: Any, num_nodes: int | None = None, owner: str = "graph"
) -> SparseAdjacency | np.ndarray:
    """Check an adjacency and return it as a dense float array or a :class:`SparseAdjacency`.

    Args:
        adjacency: a dense ``(N, N)`` array, a :class:`SparseAdjacency`, or a
            tuple ``(indices, values)`` (``values`` may be ``None``).
        num_nodes: the expected ``N`` (for example ``x.shape[0]``); also the
            size of a tuple's matrix. ``None`` accepts any size.
        owner: how error messages name the caller.

    Raises:
        ShapeError: a dense array that is not square or not ``(num_nodes, num_nodes)``.
        DataError: indices out of range, non-finite or non-real entries, a
            form that is none of the above.
    """
    if isinstance(adjacency, tuple):
        if len(adjacency) != 2:
            raise DataError(
                f"{owner}: a sparse adjacency tuple must be (indices, values), got {len(adjacency)} items"
            )
        adjacency = SparseAdjacency(adjacency[0], adjacency[1], num_nodes, owner=owner)
    if isinstance(adjacency, SparseAdjacency):
        if num_nodes is not None and adjacency.num_nodes != num_nodes:
            raise ShapeError(
                f"{owner}: the adjacency has {adjacency.num_nodes} nodes, the features have {num_nodes} "
                f"rows; expected a ({num_nodes}, {num_nodes}) adjacency"
            )
        return adjacency
    if not isinstance(adjacency, np.ndarray):
        raise DataError(
            f"{owner}: adjacency must be a dense (N, N) array, a SparseAdjacency or an "
            f"(indices, values) tuple, got {type(adjacency).__name__}"
        )
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ShapeError(f"{owner}: a dense adjacency must be square (N, N), got shape {adjacency.shape}")
    if num_nodes is not None and adjacency.shape[0] != num_nodes:
        raise ShapeError(
            f"{owner}: expected a ({num_nodes}, {num_nodes}) adjacency for {num_nodes} nodes, "
            f"got shape {adjacency.shape}"
        )
    return _real_finite(owner, "a dense adjacency", adjacency)


def _inverse_sqrt(degree: np.ndarray, owner: str) -> np.ndarray:
    """``d^-1/2``, 0 where ``d == 0`` (an isolated node without self loop keeps a zero row).

    Raises:
        DataError: a negative degree (negative edge weights), whose root is not real.
    """
    negative = np.flatnonzero(degree < 0)
    if negative.size:
        i = int(negative[0])
        raise DataError(
            f"{owner}: node {i} has degree {degree[i]:.6g} < 0 (negative edge weights), so "
            "D^-1/2 is not real; expected degrees >= 0, or pass normalize=False"
        )
    out = np.zeros_like(degree)
    positive = degree > 0
    out[positive] = 1.0 / np.sqrt(degree[positive])
    return out


def gcn_normalize_dense(
    adjacency: np.ndarray, add_self_loops: bool = True, normalize: bool = True, owner: str = "graph"
) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` of a dense ``(N, N)`` array, ``D`` the row sums of ``A + I``.

    Without ``add_self_loops`` the ``+ I`` is left out; without ``normalize``
    the result is ``A (+ I)`` itself. A self loop already in ``A`` keeps its
    weight plus one (Kipf and Welling's ``A + I``).

    Raises:
        DataError: a negative degree while normalising (``owner`` names the caller).
    """
    a = np.array(adjacency, dtype=np.float64)
    if add_self_loops:
        a[np.diag_indices_from(a)] += 1.0
    if not normalize:
        return a
    scale = _inverse_sqrt(a.sum(axis=1), owner)
    return scale[:, None] * a * scale[None, :]


def gcn_normalize_coo(
    adjacency: SparseAdjacency, add_self_loops: bool = True, normalize: bool = True, owner: str = "graph"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries ``(rows, cols, values)`` of ``D^-1/2 (A + I) D^-1/2`` for a COO adjacency.

    ``A + I`` appends one entry ``(i, i, 1)`` per node; ``D_ii`` is the sum of
    row ``i``'s values (a bincount); each entry is scaled by
    ``D_ii^-1/2 D_jj^-1/2``. The same matrix as :func:`gcn_normalize_dense`.

    Raises:
        DataError: a negative degree while normalising (``owner`` names the caller).
    """
    n = adjacency.num_nodes
    rows, cols = adjacency.indices
    values = adjacency.values
    if add_self_loops:
        loop = np.arange(n, dtype=np.int64)
        rows = np.concatenate([rows, loop])
        cols = np.concatenate([cols, loop])
        values = np.concatenate([values, np.ones(n)])
    if normalize:
        scale = _inverse_sqrt(np.bincount(rows, weights=values, minlength=n), owner)
        values = scale[rows] * values * scale[cols]
    return rows, cols, values


@dataclass(frozen=True)
class CSRMatrix:
    """A sparse ``(n_rows, n_cols)`` matrix, entries sorted by row (compressed sparse rows).

    Attributes:
        n_rows, n_cols: the shape.
        cols: column of each entry ``(nnz,)``, in row order.
        values: value of each entry ``(nnz,)``.
        starts: offset of the first entry of each non-empty row.
        nonempty: the rows that hold at least one entry (rows of ``starts``).
    """

    n_rows: int
    n_cols: int
    cols: np.ndarray
    values: np.ndarray
    starts: np.ndarray
    nonempty: np.ndarray

    def astype(self, dtype: Any) -> CSRMatrix:
        """The same matrix with values of ``dtype`` (itself when already so)."""
        if self.values.dtype == dtype:
            return self
        return CSRMatrix(
            self.n_rows, self.n_cols, self.cols, self.values.astype(dtype), self.starts, self.nonempty
        )

    def __matmul__(self, dense: np.ndarray) -> np.ndarray:
        return csr_matmul(self, dense)


def coo_to_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> CSRMatrix:
    """Sort COO entries by row (stable) into a :class:`CSRMatrix`."""
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n_rows)
    nonempty = np.flatnonzero(counts)
    starts = (np.cumsum(counts) - counts)[nonempty]
    return CSRMatrix(n_rows, n_cols, cols[order], values[order], starts, nonempty)


def csr_matmul(matrix: CSRMatrix, dense: np.ndarray) -> np.ndarray:
    """``M @ dense`` for ``M`` sparse ``(n, m)`` and ``dense`` ``(m, F)``: a segment sum per row.

    ``(M H)_i = sum_{e in row i} values[e] * H[cols[e]]``: one gather, one
    broadcast multiply and one ``np.add.reduceat`` over the row segments.
    """
    out = np.zeros((matrix.n_rows, *dense.shape[1:]), dtype=np.result_type(matrix.values, dense))
    if matrix.nonempty.size:
        weighted = dense[matrix.cols]
        weighted *= matrix.values.reshape(-1, *([1] * (dense.ndim - 1)))
        out[matrix.nonempty] = np.add.reduceat(weighted, matrix.starts, axis=0)
    return out


def gcn_propagation(
    adjacency: SparseAdjacency | np.ndarray,
    add_self_loops: bool = True,
    normalize: bool = True,
    owner: str = "graph",
) -> tuple[Any, Any]:
    """``(Â, Â^T)`` as two operands of ``@``: dense arrays, or two :class:`CSRMatrix`.

    A dense adjacency gives the dense ``Â`` and its transposed view; a
    :class:`SparseAdjacency` gives ``Â`` sorted by row and ``Â^T`` (the same
    entries with rows and columns swapped, sorted by column), so both
    ``Â H`` and ``Â^T G`` are segment sums even for a directed graph.
    """
    if isinstance(adjacency, SparseAdjacency):
        n = adjacency.num_nodes
        rows, cols, values = gcn_normalize_coo(adjacency, add_self_loops, normalize, owner)
        return coo_to_csr(rows, cols, values, n, n), coo_to_csr(cols, rows, values, n, n)
    a_hat = gcn_normalize_dense(adjacency, add_self_loops, normalize, owner)
    return a_hat, a_hat.T
