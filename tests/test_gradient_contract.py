"""The arrays a layer may modify, keep and return (issue 15, docs/plugins.md).

A plugin's backward may return a read-only broadcast view or an array it keeps:
the layer below writes into ``grad_out`` in place only when the layer that
produced it declares ``returns_fresh_grad``, so neither gives a NumPy error nor
has its array changed behind its back.
"""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Sequential
from framework.layers import Dropout, Linear, ReLU


class BroadcastBias(framework.Layer):
    """``y = x + 1``; its backward hands back a read-only broadcast of a row (a valid dL/dx
    only for this test's all-equal rows, which is what the test feeds it)."""

    def forward(self, ctx, x):
        ctx.shape = x.shape
        return x + 1.0

    def backward(self, ctx, grad_out):
        return np.broadcast_to(grad_out[:1], ctx.shape)


class KeepsItsGradient(framework.Layer):
    """Older form: keeps the gradient it returns, and checks nobody changed it."""

    def forward(self, x):
        return x * 2.0

    def backward(self, grad_out):
        self.kept = grad_out * 2.0
        self.snapshot = self.kept.copy()
        return self.kept


@pytest.mark.parametrize("below", [ReLU, lambda: Dropout(0.5)])
def test_a_read_only_broadcast_gradient_is_not_written_into(below) -> None:
    framework.set_seed(0)
    model = Sequential([Linear(3, 4), below(), BroadcastBias(), Linear(4, 2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((5, 3), dtype=np.float32)  # equal rows: the broadcast gradient is exact
    y = np.zeros((5, 2), dtype=np.float32)
    history = model.fit(x, y, epochs=2, batch_size=5, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_an_array_a_layer_keeps_is_not_changed_behind_its_back() -> None:
    framework.set_seed(0)
    keeper = KeepsItsGradient()
    model = Sequential([Linear(3, 4), ReLU(), keeper, Linear(4, 2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    model.fit(x, np.zeros((6, 2), np.float32), epochs=1, batch_size=6, verbose=0)
    np.testing.assert_array_equal(keeper.kept, keeper.snapshot)


def test_a_fresh_gradient_is_still_reused_in_place_by_builtins() -> None:
    """The optimisation stays for built-ins: Dropout's backward writes into Linear's fresh gradient."""
    framework.set_seed(0)
    model = Sequential([Linear(3, 4), Dropout(0.5), Linear(4, 2)])
    model.build((None, 3))
    seen = []
    dropout = model.layers[1]
    backward = dropout.backward
    dropout.backward = lambda ctx, g: seen.append(ctx.grad_out_writable) or backward(ctx, g)
    model(np.ones((2, 3), np.float32), training=True)
    model.backward(np.ones((2, 2), np.float32))
    assert seen == [True]
