"""One recurrent cell called T times in a functional graph equals PyTorch's whole-sequence layer (issue 15).

A hand-unrolled loop calls one cell at every step: the weights are shared, so
each call must keep its own record for backward (the graph executor gives each
node its own context) and the parameter gradients must sum over the steps.
Before the cells kept their state on the context, the second call overwrote
the first's cache and the gradients were silently wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_torch

from framework import Input, Model
from framework.base.context import Context
from plugins.recurrent import GRUCell, LSTMCell, RNNCell

try:
    import torch
except ImportError:
    torch = None

T, N, IN, H = 5, 3, 4, 6

KINDS = {
    "rnn_tanh": (lambda: RNNCell(IN, H), lambda: torch.nn.RNN(IN, H)),
    "rnn_relu": (
        lambda: RNNCell(IN, H, nonlinearity="relu"),
        lambda: torch.nn.RNN(IN, H, nonlinearity="relu"),
    ),
    "gru": (lambda: GRUCell(IN, H), lambda: torch.nn.GRU(IN, H)),
    "lstm": (lambda: LSTMCell(IN, H), lambda: torch.nn.LSTM(IN, H)),
}
PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def assert_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error < 1e-6, f"{what}: relative error {error:.3g}"


def _torch_reference(kind, seed=0):
    """The torch layer, the cell with its weights, data and the torch results for L = sum(out * R)."""
    make_cell, make_torch = KINDS[kind]
    torch.manual_seed(seed)
    ref = make_torch().double()
    cell = make_cell()
    for name in PARAMS:
        getattr(cell, name).data[...] = getattr(ref, f"{name}_l0").detach().numpy()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, IN))
    states = [rng.standard_normal((N, H)) for _ in range(2 if kind == "lstm" else 1)]
    weights = rng.standard_normal((T, N, H))

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    out, _ = ref(xt, (st[0], st[1]) if kind == "lstm" else st[0])
    (out * torch.tensor(weights)).sum().backward()
    expected = {
        "out": out.detach().numpy(),
        "x": xt.grad.numpy(),
        "states": [s.grad.numpy()[0] for s in st],
        **{name: getattr(ref, f"{name}_l0").grad.numpy() for name in PARAMS},
    }
    return cell, x, states, weights, expected


def _unrolled_model(cell, n_states):
    """``T`` step inputs and the initial state(s) in; ``h_1 .. h_T`` out, every step one call of ``cell``."""
    steps = [Input((IN,), name=f"x{t}") for t in range(T)]
    initial = [Input((H,), name=name) for name in ("h0", "c0")[:n_states]]
    state = list(initial)
    outputs = []
    for x_t in steps:
        new = cell([x_t, *state])
        state = list(new) if n_states == 2 else [new]
        outputs.append(state[0])
    return Model(steps + initial, outputs)


@requires_torch
@pytest.mark.parametrize("kind", list(KINDS))
def test_unrolled_cell_in_a_functional_model_matches_torch(float64, kind):
    cell, x, states, weights, expected = _torch_reference(kind)
    model = _unrolled_model(cell, len(states))
    assert len(model.layers) == 1 + T + len(states)  # the inputs and the one cell, called T times

    out = model([x[t] for t in range(T)] + states)
    for t in range(T):
        assert_close(out[t], expected["out"][t], f"h_{t + 1}")
    model.zero_grad()
    grads = model.backward([weights[t] for t in range(T)])
    for name in PARAMS:
        assert_close(getattr(cell, name).grad, expected[name], f"d{name}")
    for t in range(T):
        assert_close(grads[t], expected["x"][t], f"dx_{t}")
    for i, label in enumerate(("h0", "c0")[: len(states)]):
        assert_close(grads[T + i], expected["states"][i], f"d{label}")


@requires_torch
def test_unrolled_rnn_cell_with_explicit_contexts_matches_torch(float64):
    """The same loop by hand: one context per step, backwards in reverse order."""
    cell, x, (h0,), weights, expected = _torch_reference("rnn_tanh", seed=3)
    contexts = [Context(True) for _ in range(T)]
    h, outs = h0, []
    for t in range(T):
        h = cell.forward(contexts[t], [x[t], h])
        outs.append(h)
    assert_close(np.stack(outs), expected["out"], "outputs")
    cell.zero_grad()
    dh = np.zeros((N, H))
    dxs = [None] * T
    for t in range(T - 1, -1, -1):
        dxs[t], dh = cell.backward(contexts[t], weights[t] + dh)
    for name in PARAMS:
        assert_close(getattr(cell, name).grad, expected[name], f"d{name}")
    assert_close(np.stack(dxs), expected["x"], "dx")
    assert_close(dh, expected["states"][0], "dh0")


@requires_torch
def test_manual_form_unrolled_loop_is_refused_not_silently_wrong(float64):
    """By hand without contexts, a second step replaces the first's record: backward says so."""
    from framework.errors import ConfigError, NotBuiltError

    cell, x, (h0,), weights, _ = _torch_reference("rnn_tanh")
    h1 = cell(x[0], h0)
    cell(x[1], h1)
    cell.backward(weights[1])
    with pytest.raises(ConfigError, match="functional Model"):
        cell.backward(weights[0] + cell.grad_h0)
    cell(x[0], h0)  # one call, two backwards: the cell's own rule, one backward per forward
    cell.backward(weights[0])
    with pytest.raises(NotBuiltError, match="functional Model"):
        cell.backward(weights[0])
