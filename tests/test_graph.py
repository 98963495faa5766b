"""Tests of GCNConv and the graph helpers: gradients, normalisation, sparse = dense, errors, training."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest

import framework
from framework import losses, optimizers
from framework.base.context import Context
from framework.base.layer import takes_context
from framework.errors import DataError, FrameworkError, ShapeError
from framework.testing import check_gradients
from plugins.core import Dropout
from plugins.graph import GCNConv
from plugins.graph_ops import (
    SparseAdjacency,
    as_coo,
    coo_to_csr,
    csr_matmul,
    gcn_normalize_coo,
    gcn_normalize_dense,
)

REPO = Path(__file__).resolve().parents[1]


def random_graph(rng: np.random.Generator, n: int = 6, p: float = 0.4, directed: bool = False) -> np.ndarray:
    """A random weighted adjacency with no isolated node."""
    a = (rng.random((n, n)) < p) * rng.uniform(0.5, 2.0, (n, n))
    np.fill_diagonal(a, 0.0)
    a[np.arange(n), (np.arange(n) + 1) % n] = 1.0
    return a if directed else np.maximum(a, a.T)


def reference_normalized(a: np.ndarray) -> np.ndarray:
    """Kipf & Welling's D^-1/2 (A + I) D^-1/2, written densely with matrix products."""
    a_tilde = a + np.eye(a.shape[0])
    d_inv_sqrt = np.diag(a_tilde.sum(axis=1) ** -0.5)
    return d_inv_sqrt @ a_tilde @ d_inv_sqrt


def as_pair(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(a)
    return np.stack([rows, cols]).astype(np.int64), a[rows, cols]


# -- helpers ------------------------------------------------------------------


def test_normalisation_matches_dense_formula(rng):
    a = random_graph(rng, 7)
    np.testing.assert_allclose(gcn_normalize_dense(a), reference_normalized(a), rtol=1e-12)
    rows, cols, values = gcn_normalize_coo(SparseAdjacency(*as_pair(a), num_nodes=7))
    sparse = np.zeros((7, 7))
    np.add.at(sparse, (rows, cols), values)
    np.testing.assert_allclose(sparse, reference_normalized(a), rtol=1e-12)


def test_normalisation_options(rng):
    a = random_graph(rng, 5)
    np.testing.assert_allclose(gcn_normalize_dense(a, normalize=False), a + np.eye(5))
    d = a.sum(axis=1) ** -0.5
    np.testing.assert_allclose(gcn_normalize_dense(a, add_self_loops=False), d[:, None] * a * d[None, :])


def test_isolated_node_without_self_loops_gets_zero_row():
    a = np.zeros((3, 3))
    a[0, 1] = a[1, 0] = 1.0
    a_hat = gcn_normalize_dense(a, add_self_loops=False)
    assert np.all(np.isfinite(a_hat)) and np.all(a_hat[2] == 0)


def test_csr_matmul_and_its_transpose(rng):
    a = random_graph(rng, 8, directed=True)
    a[3] = 0.0  # an empty row: reduceat must leave it zero
    (rows, cols), values = as_pair(a)
    h = rng.standard_normal((8, 3))
    np.testing.assert_allclose(csr_matmul(coo_to_csr(rows, cols, values, 8, 8), h), a @ h, rtol=1e-12)
    np.testing.assert_allclose(csr_matmul(coo_to_csr(cols, rows, values, 8, 8), h), a.T @ h, rtol=1e-12)


def test_repeated_pairs_add_up_like_a_dense_sum():
    indices = np.array([[0, 0, 1], [1, 1, 0]])
    adj = SparseAdjacency(indices, np.array([1.0, 2.0, 3.0]), num_nodes=2)
    np.testing.assert_array_equal(adj.to_dense(), [[0.0, 3.0], [3.0, 0.0]])
    np.testing.assert_array_equal(SparseAdjacency.from_dense(adj.to_dense()).to_dense(), adj.to_dense())


# -- the layer -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["dense", "sparse", "tuple"])
@pytest.mark.parametrize("in_out", [(3, 4), (5, 2)])  # both product orders: (ÂH)W^T and Â(HW^T)
def test_gradients(float64, rng, form, in_out):
    a = random_graph(rng, 6)
    adjacency = {"dense": a, "sparse": SparseAdjacency(*as_pair(a), num_nodes=6), "tuple": as_pair(a)}[form]
    layer = GCNConv(*in_out, activation="tanh").set_graph(adjacency)
    layer.bias.data[:] = rng.standard_normal(in_out[1])
    report = check_gradients(layer, rng.standard_normal((6, in_out[0])))
    assert set(report.errors) == {"input", "weight", "bias"}


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_gradients_directed_graph_no_bias(float64, rng, form):
    a = random_graph(rng, 6, directed=True)
    assert not np.allclose(a, a.T)
    adjacency = a if form == "dense" else SparseAdjacency(*as_pair(a), num_nodes=6)
    for in_out in [(2, 3), (4, 3)]:
        layer = GCNConv(*in_out, bias=False).set_graph(adjacency)
        assert layer.bias is None
        check_gradients(layer, rng.standard_normal((6, in_out[0])))


def test_output_matches_formula_and_dense_equals_sparse(float64, rng):
    a = random_graph(rng, 6)
    x = rng.standard_normal((6, 3))
    layer = GCNConv(3, 2, activation="relu")
    layer.bias.data[:] = rng.standard_normal(2)
    expected = np.maximum(reference_normalized(a) @ x @ layer.weight.data.T + layer.bias.data, 0.0)
    dense = layer.forward(x, adjacency=a)
    sparse = layer.forward(x, adjacency=SparseAdjacency(*as_pair(a), num_nodes=6))
    pair = layer.forward(x, adjacency=as_pair(a))
    np.testing.assert_allclose(dense, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sparse, dense, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pair, dense, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32(rng):
    a = random_graph(rng, 6)
    layer = GCNConv(3, 2).set_graph(as_pair(a))
    out = layer(rng.standard_normal((6, 3)).astype(np.float32))
    assert out.dtype == np.float32
    assert layer.backward(np.ones_like(out)).dtype == np.float32


def test_forward_adjacency_replaces_stored_graph(rng):
    a, b = random_graph(rng, 6), random_graph(rng, 6, p=0.9)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    layer = GCNConv(3, 2).set_graph(a)
    first = layer(x)
    second = layer(x, adjacency=b)
    assert layer.adjacency is b
    np.testing.assert_allclose(layer(x), second)
    assert not np.allclose(first, second)


def test_no_self_loops_no_normalize(float64, rng):
    a = random_graph(rng, 5)
    x = rng.standard_normal((5, 2))
    layer = GCNConv(2, 3, bias=False, add_self_loops=False, normalize=False).set_graph(as_pair(a))
    np.testing.assert_allclose(layer(x), a @ x @ layer.weight.data.T, rtol=1e-12)
    check_gradients(layer, x)


def test_weight_init_is_glorot_uniform():
    layer = GCNConv(300, 100)
    bound = np.sqrt(6.0 / 400)
    w = layer.weight.data
    assert w.shape == (100, 300) and np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.all(layer.bias.data == 0)


def test_config_round_trip_without_graph(rng):
    layer = GCNConv(4, 3, activation="relu", bias=False, add_self_loops=False, name="g")
    layer.set_graph(random_graph(rng, 5))
    config = layer.get_config()
    assert config["in_features"] == 4 and config["add_self_loops"] is False
    clone = GCNConv.from_config(config)
    assert clone.get_config() == config and clone.adjacency is None
    assert framework.layers.get("gcnconv", in_features=2, out_features=1).out_features == 1
    assert layer.output_shape((None, 4)) == (None, 3)


# -- errors --------------------------------------------------------------------


def test_error_without_graph(rng):
    with pytest.raises(DataError, match="set_graph"):
        GCNConv(3, 2)(rng.standard_normal((4, 3)))


@pytest.mark.parametrize("shape", [(4, 5), (4,), (2, 4, 4)])
def test_error_dense_not_square(shape):
    with pytest.raises(ShapeError, match=r"square \(N, N\)"):
        GCNConv(3, 2).set_graph(np.ones(shape))


def test_error_adjacency_node_count_mismatch(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ShapeError, match=r"expected a \(4, 4\) adjacency.*\(5, 5\)"):
        GCNConv(3, 2)(x, adjacency=np.ones((5, 5)))
    with pytest.raises(ShapeError, match=r"5 nodes.*4 rows"):
        GCNConv(3, 2)(x, adjacency=SparseAdjacency(np.array([[0], [4]]), num_nodes=5))


def test_error_indices_out_of_range(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(DataError, match=r"node index 7 .*out of range \[0, 4\)"):
        GCNConv(3, 2)(x, adjacency=(np.array([[0, 1], [1, 7]]), None))
    with pytest.raises(DataError, match=r"node index -1 .*out of range"):
        GCNConv(3, 2).set_graph((np.array([[0, -1], [1, 0]]), None))
    with pytest.raises(DataError, match=r"node index 3 .*\[0, 3\)"):
        SparseAdjacency(np.array([[0, 3], [1, 0]]), num_nodes=3)


def test_error_bad_coo_shapes_and_forms():
    with pytest.raises(ShapeError, match=r"\(2, E\)"):
        SparseAdjacency(np.zeros((3, 4), dtype=int))
    with pytest.raises(ShapeError, match=r"values must have shape \(2,\)"):
        SparseAdjacency(np.array([[0, 1], [1, 0]]), np.ones(3))
    with pytest.raises(DataError, match="integers"):
        SparseAdjacency(np.array([[0.5, 1.0], [1.0, 0.0]]))
    with pytest.raises(DataError, match="dense"):
        as_coo([[0, 1], [1, 0]])


def test_error_feature_shape_and_config(rng):
    layer = GCNConv(3, 2).set_graph(random_graph(rng, 4))
    with pytest.raises(ShapeError, match=r"\(None, 3\)"):
        layer(rng.standard_normal((4, 5)))
    for kwargs in ({"in_features": 0, "out_features": 2}, {"in_features": 3, "out_features": 2.5}):
        with pytest.raises(FrameworkError, match="must be a positive integer"):
            GCNConv(**kwargs)
    with pytest.raises(FrameworkError, match="normalize must be True or False"):
        GCNConv(3, 2, normalize="yes")


# -- training --------------------------------------------------------------------


def train_two_layer_gcn(x, adjacency, labels, train_mask, epochs, lr=0.01, hidden=16, seed=0):
    framework.set_seed(seed)
    layers = [
        Dropout(0.5),
        GCNConv(x.shape[1], hidden, activation="relu").set_graph(adjacency),
        Dropout(0.5),
        GCNConv(hidden, int(labels.max()) + 1).set_graph(adjacency),
    ]
    params = [p for layer in layers for p in layer.parameters()]
    opt = optimizers.get("adam", lr=lr).bind(params)
    loss = losses.get("masked_cross_entropy", mask=train_mask)
    for _ in range(epochs):
        h = x
        for layer in layers:
            h = layer(h)
        loss(h, labels)
        opt.zero_grad()
        g = loss.backward()
        for layer in reversed(layers):
            g = layer.backward(g)
        opt.step()
    h = x
    for layer in layers:
        h = layer.eval()(h)
    return h


def test_two_community_node_classification_is_learned_fast():
    rng = np.random.default_rng(7)
    n = 40
    labels = np.repeat([0, 1], n // 2)
    same = labels[:, None] == labels[None, :]
    a = np.triu(rng.random((n, n)) < np.where(same, 0.3, 0.02), 1).astype(np.float64)
    a = a + a.T
    # features carry a weak class signal; neighbourhood averaging makes it clear
    x = (rng.standard_normal((n, 8)) + 0.6 * np.where(labels[:, None] == 1, 1.0, -1.0)).astype(np.float32)
    train_mask = np.zeros(n, dtype=bool)
    train_mask[[0, 1, 2, 20, 21, 22]] = True
    start = time.perf_counter()
    logits = train_two_layer_gcn(x, as_pair(a), labels, train_mask, epochs=60, lr=0.05)
    elapsed = time.perf_counter() - start
    accuracy = np.mean(logits.argmax(axis=1)[~train_mask] == labels[~train_mask])
    assert accuracy >= 0.9, accuracy
    assert elapsed < 1.0, elapsed


def _cora_path() -> Path:
    return Path(os.environ.get("FRAMEWORK_CORA", REPO.parent / "shared" / "data" / "cora.tar.gz"))


@pytest.mark.skipif(not _cora_path().exists(), reason="Cora archive not found (set FRAMEWORK_CORA)")
def test_cora_example_loads_and_trains_a_few_epochs():
    spec = importlib.util.spec_from_file_location("gcn_cora", REPO / "examples" / "gcn_cora.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = example.load_cora(_cora_path())
    assert data.features.shape == (2708, 1433) and data.labels.shape == (2708,)
    assert data.edge_index.shape == (2, 10556)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [140, 500, 1000]
    np.testing.assert_allclose(data.features.sum(axis=1)[data.features.sum(axis=1) > 0], 1.0, rtol=1e-5)
    result = example.train(data, epochs=10, seed=0, patience=None)
    assert result["test_accuracy"] > 0.5  # the largest class is 30% of the nodes
    assert result["train_loss"][-1] < result["train_loss"][0]


# -- the per-call context and the full-batch flag ---------------------------------


def test_gcn_needs_the_full_batch():
    assert GCNConv.needs_full_batch is True
    assert GCNConv(3, 2).needs_full_batch is True
    assert "needs_full_batch" in GCNConv.__doc__


@pytest.mark.parametrize("in_out", [(3, 4), (5, 2)])  # both product orders
def test_interleaved_calls_keep_their_own_context(float64, rng, in_out):
    """Two forwards (the second on another graph size), then their backwards in reverse order."""
    layer = GCNConv(*in_out, activation="tanh")
    assert takes_context(layer)
    a6, a4 = random_graph(rng, 6), random_graph(rng, 4)
    x1, x2 = rng.standard_normal((6, in_out[0])), rng.standard_normal((4, in_out[0]))
    g1, g2 = rng.standard_normal((6, in_out[1])), rng.standard_normal((4, in_out[1]))

    def alone(x: np.ndarray, adjacency: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        layer.zero_grad()
        ctx = Context(True)
        layer.forward(ctx, x, adjacency=adjacency)
        return layer.backward(ctx, g.copy()), layer.weight.grad.copy()

    ref1, ref2 = alone(x1, a6, g1), alone(x2, a4, g2)
    layer.zero_grad()
    c1, c2 = Context(True), Context(True)
    layer.forward(c1, x1, adjacency=a6)
    layer.forward(c2, x2, adjacency=a4)
    dx2 = layer.backward(c2, g2.copy())
    dx1 = layer.backward(c1, g1.copy())
    np.testing.assert_allclose(dx1, ref1[0], rtol=1e-12)
    np.testing.assert_allclose(dx2, ref2[0], rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref1[1] + ref2[1], rtol=1e-12)


def test_a_gcn_shared_by_two_places_of_a_model(float64, rng):
    """One GCNConv applied twice (two propagation steps with one weight): exact gradients."""
    gcn = GCNConv(4, 4, activation="tanh").set_graph(as_pair(random_graph(rng, 6)))
    gcn.bias.data[:] = rng.standard_normal(4)
    x = framework.Input((4,))
    model = framework.Model(x, gcn(gcn(x)))
    check_gradients(model, rng.standard_normal((6, 4)))


def test_first_layer_skips_the_input_gradient(rng):
    layer = GCNConv(3, 5).set_graph(random_graph(rng, 6))
    x = rng.standard_normal((6, 3)).astype(np.float32)
    full, skipped = Context(True), Context(True, needs_input_grad=False)
    layer.zero_grad()
    layer.forward(full, x)
    assert layer.backward(full, np.ones((6, 5), np.float32)).shape == (6, 3)
    want = layer.weight.grad.copy()
    layer.zero_grad()
    layer.forward(skipped, x)
    assert layer.backward(skipped, np.ones((6, 5), np.float32)) is None
    np.testing.assert_allclose(layer.weight.grad, want, rtol=1e-6)
