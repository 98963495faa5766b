"""fit / evaluate / predict refuse to cut or shuffle axis 0 when it is not the model's batch axis.

A ``batch_first=False`` layer (PyTorch's default for the recurrent layers and attention) fed
``(L, N, F)`` data reads axis 0 as time: batches of 4 split each sequence into pieces, so
``predict`` returned something else than ``model(x)`` with no error. Fed ``(N, L, F)``, it mixes
the samples. Either way the loops now raise a ``ConfigError`` naming the layer.
"""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Model, Sequential
from framework.errors import ConfigError
from framework.layers import GRU, LSTM, RNN, Linear, MultiheadAttention, TransformerEncoderLayer

L, N, F = 12, 10, 4


def sequence_first(kind: str) -> Sequential:
    framework.set_seed(0)
    first = {
        "lstm": lambda: LSTM(F, 6, output="last"),
        "gru": lambda: GRU(F, 6, output="last"),
        "rnn": lambda: RNN(F, 6, output="last"),
    }
    if kind in first:
        return Sequential([first[kind](), Linear(6, 1)])
    layer = {
        "encoder": lambda: TransformerEncoderLayer(F, 2, 8, dropout=0.0, batch_first=False),
    }[kind]()
    return Sequential([layer, Linear(F, 1)])


def data(shape):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


KINDS = ["lstm", "gru", "rnn", "encoder"]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_refuses_to_cut_the_time_axis(kind):
    model = sequence_first(kind)
    x = data((L, N, F))
    whole = model(x)
    with pytest.raises(ConfigError, match=r"batch_first=False.*batch_size=12") as err:
        model.predict(x, batch_size=4)
    assert "(12, 10, 4)" in str(err.value) and "cut into batches of 4" in str(err.value)
    np.testing.assert_array_equal(model.predict(x, batch_size=L), whole)  # nothing cut: allowed, equal


def per_step(kind: str) -> Sequential:
    """A prediction per time step: output (L, N, 1)."""
    framework.set_seed(0)
    if kind == "encoder":
        return Sequential([TransformerEncoderLayer(F, 2, 8, dropout=0.0, batch_first=False), Linear(F, 1)])
    return Sequential([{"lstm": LSTM, "gru": GRU, "rnn": RNN}[kind](F, 6, output="sequence"), Linear(6, 1)])


@pytest.mark.parametrize("kind", KINDS)
def test_fit_and_evaluate_refuse_cut_or_shuffled_time_axes(kind):
    model = per_step(kind)
    model.compile("sgd", "mse")
    x, y = data((L, N, F)), data((L, N, 1))
    with pytest.raises(ConfigError, match="is cut into batches of 4"):
        model.evaluate(x, y, batch_size=4, verbose=0)
    with pytest.raises(ConfigError, match=r"is cut into batches of 4.*batch_first=False"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="is shuffled"):
        model.fit(x, y, batch_size=L, epochs=1, verbose=0)  # one batch, but its time steps reordered
    before = model.get_weights()
    model.fit(x, y, batch_size=L, shuffle=False, epochs=1, verbose=0)  # nothing cut: trains
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    loss = model.evaluate(x, y, batch_size=L, verbose=0)["loss"]
    assert np.isclose(loss, np.mean((model(x) - y) ** 2), rtol=1e-5)


def test_batch_first_data_to_a_default_lstm_is_refused():
    """The Keras habit: (N, L, F) data to LSTM(...) without batch_first=True mixes the samples."""
    model = sequence_first("lstm")
    x = data((64, L, F))
    with pytest.raises(ConfigError, match="batch_first=True"):
        model.predict(x)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_batch_first_layers_are_cut_freely_and_equal_the_whole_call(kind):
    framework.set_seed(0)
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[kind]
    model = Sequential([cls(F, 6, batch_first=True, output="last"), Linear(6, 1)])
    x = data((N, L, F))
    np.testing.assert_allclose(model.predict(x, batch_size=3), model(x), rtol=1e-6, atol=1e-6)


class _Transposing(Model):
    """A hand-written model that turns (N, L, E) into (L, N, E) for a sequence-first attention."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = MultiheadAttention(F, 2, batch_first=False)
        self.head = Linear(F, 1)

    def forward(self, ctx, x):
        seq = np.ascontiguousarray(x.transpose(1, 0, 2))
        out = self.attention.forward(ctx.child("attention"), seq)
        return self.head.forward(ctx.child("head"), out.mean(axis=0))


def test_a_model_that_moves_the_batch_axis_itself_is_not_refused():
    framework.set_seed(0)
    model = _Transposing()
    x = data((N, L, F))
    whole = model(x)
    np.testing.assert_allclose(model.predict(x, batch_size=3), whole, rtol=1e-5, atol=1e-6)


def test_one_sample_is_never_checked():
    model = sequence_first("lstm")
    x = data((1, N, F))
    np.testing.assert_array_equal(model.predict(x, batch_size=1), model(x))
