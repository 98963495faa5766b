"""Tests of the Embedding layer: lookup, scatter-add gradient, padding index, errors, config."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework.base.context import Context
from framework.base.layer import takes_context
from framework.errors import ConfigError, DataError
from framework.layers import Linear
from framework.testing import check_gradients, numerical_gradient, relative_error
from plugins.embedding import Embedding, scatter_add_rows


def test_forward_is_a_row_lookup_for_any_shape(rng):
    layer = Embedding(10, 4)
    for shape in [(5,), (3, 7), (2, 3, 4)]:
        idx = rng.integers(0, 10, shape)
        out = layer(idx)
        assert out.shape == (*shape, 4) and out.dtype == np.float32
        np.testing.assert_array_equal(out[(0,) * len(shape)], layer.weight.data[idx[(0,) * len(shape)]])
        assert layer.output_shape((None, *shape[1:])) == (None, *shape[1:], 4)


@pytest.mark.parametrize("shape", [(6,), (3, 5), (2, 3, 2)])
def test_weight_gradient_by_finite_differences(float64, rng, shape):
    layer = Embedding(7, 3)
    idx = rng.integers(0, 7, shape)
    idx.flat[:3] = 2  # repeated indices must accumulate
    report = check_gradients(layer, idx, check_input=False)
    assert set(report.errors) == {"weight"}


def test_gradient_against_one_hot_formula(float64, rng):
    layer = Embedding(6, 2)
    idx = rng.integers(0, 6, (4, 5))
    g = rng.standard_normal((4, 5, 2))
    layer(idx)
    assert layer.backward(g) is None  # indices are not differentiable
    one_hot = np.eye(6)[idx.reshape(-1)]  # (20, 6)
    np.testing.assert_allclose(layer.weight.grad, one_hot.T @ g.reshape(-1, 2), rtol=1e-12)
    layer(idx)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * one_hot.T @ g.reshape(-1, 2), rtol=1e-12)


def test_scatter_add_rows_equals_add_at(rng):
    target = rng.standard_normal((9, 3))
    expected = target.copy()
    rows = rng.integers(0, 9, 50)
    values = rng.standard_normal((50, 3))
    np.add.at(expected, rows, values)
    scatter_add_rows(target, rows, values)
    np.testing.assert_allclose(target, expected, rtol=1e-12)
    scatter_add_rows(target, rows[:0], values[:0])
    np.testing.assert_allclose(target, expected, rtol=1e-12)


@pytest.mark.parametrize("padding_idx, row", [(0, 0), (-1, 4)])
def test_padding_row_is_zero_and_gets_no_gradient(float64, rng, padding_idx, row):
    layer = Embedding(5, 3, padding_idx=padding_idx)
    assert layer.padding_idx == row
    np.testing.assert_array_equal(layer.weight.data[row], 0.0)
    assert np.all(np.delete(layer.weight.data, row, axis=0) != 0.0)
    idx = np.array([[row, 1, row], [2, row, 3]])
    np.testing.assert_array_equal(layer(idx)[0, 0], 0.0)
    layer.backward(np.ones((2, 3, 3)))
    np.testing.assert_array_equal(layer.weight.grad[row], 0.0)
    np.testing.assert_array_equal(layer.weight.grad[1], 1.0)
    # the padding row is excluded from training by design (PyTorch's rule), so
    # finite differences are compared on every other row
    r = rng.standard_normal((2, 3, 3))
    layer.zero_grad()
    layer(idx)
    layer.backward(r)
    numeric = numerical_gradient(lambda: float(np.sum(layer(idx) * r)), layer.weight.data)
    others = np.arange(5) != row
    assert relative_error(layer.weight.grad[others], numeric[others]) < 1e-6
    assert np.any(numeric[row] != 0)


def test_default_init_is_standard_normal():
    framework.set_seed(3)
    w = Embedding(2000, 50).weight.data
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1.0) < 0.01


def test_integral_floats_accepted_like_integers(rng):
    layer = Embedding(8, 2)
    idx = rng.integers(0, 8, (3, 4))
    np.testing.assert_array_equal(layer(idx.astype(np.float32)), layer(idx))


@pytest.mark.parametrize("bad, value", [(10, "10"), (-1, "-1")])
def test_out_of_range_index_names_it_and_the_range(bad, value):
    layer = Embedding(10, 2, name="tokens")
    with pytest.raises(
        DataError, match=rf"Embedding layer 'tokens': index {value} is out of range \[0, 10\)"
    ):
        layer(np.array([[1, bad], [2, 3]]))


def test_non_integer_indices_are_refused():
    layer = Embedding(10, 2)
    with pytest.raises(DataError, match=r"integers in \[0, 10\), got 1.5"):
        layer(np.array([0.0, 1.5]))
    with pytest.raises(DataError, match="integer array"):
        layer(np.array(["a", "b"]))
    with pytest.raises(DataError, match="integers"):
        layer(np.array([np.nan]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_embeddings": 0, "embedding_dim": 2}, "num_embeddings must be a positive integer"),
        ({"num_embeddings": 5, "embedding_dim": 2.0}, "embedding_dim must be a positive integer"),
        ({"num_embeddings": 5, "embedding_dim": 2, "padding_idx": 5}, r"padding_idx .*\[-5, 5\)"),
        ({"num_embeddings": 5, "embedding_dim": 2, "padding_idx": True}, "padding_idx"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Embedding(**kwargs)


def test_config_round_trip_and_registry():
    layer = Embedding(12, 4, padding_idx=3, weight_init="xavier_uniform", name="emb")
    clone = Embedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.padding_idx == 3 and np.all(clone.weight.data[3] == 0)
    assert type(framework.layers.get("embedding", num_embeddings=3, embedding_dim=2)) is Embedding
    assert repr(layer) == "Embedding(12, 4, padding_idx=3)"


# -- the per-call context and weight tying ------------------------------------------------


def test_interleaved_calls_keep_their_own_indices(float64, rng):
    layer = Embedding(6, 2)
    assert takes_context(layer)
    idx1, idx2 = rng.integers(0, 6, (3, 4)), rng.integers(0, 6, (5,))
    g1, g2 = rng.standard_normal((3, 4, 2)), rng.standard_normal((5, 2))
    c1, c2 = Context(True), Context(True)
    layer.forward(c1, idx1)
    layer.forward(c2, idx2)
    layer.zero_grad()
    assert layer.backward(c1, g1) is None
    np.testing.assert_allclose(layer.weight.grad, np.eye(6)[idx1.reshape(-1)].T @ g1.reshape(-1, 2))
    layer.zero_grad()
    layer.backward(c2, g2)
    np.testing.assert_allclose(layer.weight.grad, np.eye(6)[idx2].T @ g2)


def test_tied_embedding_and_output_weights_sum_their_gradients(float64, rng):
    """``head.weight = emb.weight``: one Parameter, both backwards add into it, exactly the total derivative.

    With ``L = sum(R * logits)``, ``logits = W[idx] W^T``: ``dL/dW = R^T H + scatter_rows(idx, R W)``
    (``H = W[idx]``), checked by hand and by central differences in float64.
    """
    vocab, dim = 7, 3
    emb = Embedding(vocab, dim)
    head = Linear(dim, vocab, bias=False)
    head.weight = emb.weight
    assert head.weight is emb.weight
    model = framework.Sequential([emb, head])
    assert model.parameters() == [emb.weight] and model.count_params() == vocab * dim

    idx = np.array([[0, 3, 3, 5], [6, 1, 0, 3]])  # repeated rows must accumulate
    r = rng.standard_normal((2, 4, vocab))  # dL/dlogits
    w = emb.weight.data

    model.zero_grad()
    ctx_e, ctx_h = Context(True), Context(True)
    h = emb.forward(ctx_e, idx)
    logits = head.forward(ctx_h, h)
    np.testing.assert_allclose(logits, w[idx] @ w.T, rtol=1e-13)
    dh = head.backward(ctx_h, r.copy())
    assert emb.backward(ctx_e, dh) is None
    got = emb.weight.grad.copy()

    by_hand = r.reshape(-1, vocab).T @ w[idx].reshape(-1, dim)  # the output layer's use
    np.add.at(by_hand, idx.reshape(-1), r.reshape(-1, vocab) @ w)  # the lookup's use
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)

    table = w.copy()
    numeric = numerical_gradient(lambda: float(np.sum(r * (table[idx] @ table.T))), table)
    assert relative_error(got, numeric) < 1e-8

    # the same through the Sequential model (its manual forward / backward)
    model.zero_grad()
    model.forward(idx)
    model.backward(r)
    np.testing.assert_allclose(emb.weight.grad, by_hand, rtol=1e-12)
