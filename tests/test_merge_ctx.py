"""Merge layers in the per-call context form: interleaved calls, sharing in a graph, no layer state."""

from __future__ import annotations

import numpy as np
import pytest

from framework import Input, Model
from framework.base.context import Context
from framework.base.layer import takes_context
from framework.layers import Linear
from framework.testing import check_gradients
from plugins.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract

LAYERS = [Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate]


def _inputs(rng: np.random.Generator, cls: type, n: int, rows: int) -> list[np.ndarray]:
    k = 2 if cls is Subtract else 3
    widths = [2, 5, 3] if cls is Concatenate else [n] * 3
    return [rng.standard_normal((rows, widths[i])) for i in range(k)]


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_interleaved_calls_keep_their_own_context(rng, cls):
    """Two forwards, then their backwards in reverse order, equal the calls made one at a time."""
    layer = cls()
    assert takes_context(layer)
    xs1, xs2 = _inputs(rng, cls, 4, 3), _inputs(rng, cls, 4, 5)
    out_width = 10 if cls is Concatenate else 4
    g1, g2 = rng.standard_normal((3, out_width)), rng.standard_normal((5, out_width))

    def alone(xs: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
        ctx = Context(True)
        layer.forward(ctx, xs)
        return [d.copy() for d in layer.backward(ctx, g)]

    ref1, ref2 = alone(xs1, g1), alone(xs2, g2)
    c1, c2 = Context(True), Context(True)
    layer.forward(c1, xs1)
    layer.forward(c2, xs2)
    got2 = layer.backward(c2, g2)
    got1 = layer.backward(c1, g1)
    for got, ref in ((got1, ref1), (got2, ref2)):
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    assert not any(isinstance(v, (np.ndarray, list)) for k, v in vars(layer).items() if k.startswith("_"))


def test_extremum_gradient_keeps_the_dtype(rng):
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    layer, ctx = Maximum(), Context(True)
    layer.forward(ctx, [a, b])
    grads = layer.backward(ctx, np.ones((3, 4), np.float32))
    assert all(g.dtype == np.float32 for g in grads)
    np.testing.assert_array_equal(grads[0] + grads[1], np.ones((3, 4)))


@pytest.mark.parametrize("cls", [Add, Multiply, Maximum, Concatenate], ids=lambda c: c.__name__)
def test_a_merge_layer_shared_by_two_places_of_a_model(float64, rng, cls):
    """``merge([merge([a, b]), c])`` with one layer: exact gradients for every input and weight."""
    merge = cls()
    x = Input((3,))
    a, b = Linear(3, 3)(x), Linear(3, 3, activation="tanh")(x)
    first = merge([a, b])
    width = 6 if cls is Concatenate else 3
    c = Linear(3, width)(x)
    y = Linear(2 * width if cls is Concatenate else width, 2)(merge([first, c]))
    check_gradients(Model(x, y), rng.standard_normal((4, 3)))
