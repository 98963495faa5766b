"""Tests of the recurrent plugin: RNN / LSTM / GRU layers and cells, BPTT gradients."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework.base.context import Context
from framework.errors import ConfigError, FrameworkError, NotBuiltError, ShapeError
from framework.testing import check_gradients, numerical_gradient, relative_error
from plugins.core import Linear
from plugins.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

L, N, IN, H = 5, 2, 3, 4


# -- helpers -------------------------------------------------------------------


def _dot(out, weights) -> float:
    """``sum(out * weights)`` over matching nested tuples; ``None`` weights contribute 0."""
    if weights is None:
        return 0.0
    if isinstance(weights, tuple):
        return sum(_dot(o, w) for o, w in zip(out, weights))
    return float(np.sum(out * weights))


def _random_like(rng, out):
    if isinstance(out, tuple):
        return tuple(_random_like(rng, o) for o in out)
    return rng.standard_normal(out.shape)


def _backward(layer, weights):
    if isinstance(weights, tuple):
        return layer.backward(*weights)
    return layer.backward(weights)


#: Arrays of at most this many entries are differentiated entry by entry, larger ones along
#: ``DIRECTIONS`` random unit directions through all their entries (as ``framework.testing`` does).
MAX_ENTRIES, DIRECTIONS = 16, 6


def _finite_difference_error(loss, array, analytic, rng) -> float:
    """Relative error of ``analytic`` against central differences of ``loss`` with respect to ``array``.

    A small array is differentiated entry by entry; a larger one along random unit
    directions ``v`` through every entry, comparing ``<analytic, v>`` with
    ``(L(p + eps v) - L(p - eps v)) / 2 eps``: an error in any entry moves them.
    """
    if array.size <= MAX_ENTRIES:
        return relative_error(analytic, numerical_gradient(loss, array))
    eps, saved = 1e-6, array.copy()
    flat = rng.standard_normal((DIRECTIONS, array.size))
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    numeric, slope = [], []
    try:
        for v in flat.reshape((DIRECTIONS, *array.shape)):
            array[...] = saved + eps * v
            up, plus = array - saved, loss()
            array[...] = saved - eps * v
            down, minus = array - saved, loss()
            numeric.append((plus - minus) / (2 * eps))
            slope.append(float(np.sum(analytic * (up - down))) / (2 * eps))  # the step actually stored
    finally:
        array[...] = saved
    return relative_error(np.array(slope), np.array(numeric))


def check_bptt(layer, x, state=None, weights=None, reseed=None, seed=0) -> dict[str, float]:
    """Finite-difference check of ``L = sum(out * R)`` over every output, for x, states and parameters.

    ``weights`` mirrors the output structure (``None`` entries contribute no loss);
    by default every output is weighted at random. ``reseed`` reseeds the framework
    generator before each forward so a dropout mask stays fixed. Each array is
    checked with :func:`_finite_difference_error`.
    """

    def run():
        if reseed is not None:
            framework.set_seed(reseed)
        return layer(x) if state is None else layer(x, state)

    out = run()
    if weights is None:
        weights = _random_like(np.random.default_rng(seed), out)

    def loss() -> float:
        return _dot(run(), weights)

    run()
    layer.zero_grad()
    grad_x = _backward(layer, weights)
    # The state gradients belong to the last manual call: read them before the next forward.
    grad_states = (layer.grad_h0, getattr(layer, "grad_c0", None))
    rng = np.random.default_rng(seed + 1)
    errors = {"x": _finite_difference_error(loss, x, grad_x, rng)}
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}
    if state is not None:
        states = state if isinstance(state, tuple) else (state,)
        for label, s, g in zip(("h0", "c0"), states, grad_states):
            errors[label] = _finite_difference_error(loss, s, g, rng)
    for name, p in layer.named_parameters():
        errors[name] = _finite_difference_error(loss, p.data, analytic[name], rng)
    bad = {k: v for k, v in errors.items() if not v < 1e-6}
    assert not bad, f"{layer!r}: gradient check failed: {bad}"
    return errors


def _seq(rng, batch_first=False, length=L, n=N, features=IN):
    shape = (n, length, features) if batch_first else (length, n, features)
    return rng.standard_normal(shape)


def _state(rng, layer, n=N):
    shape = (layer.num_directions * layer.num_layers, n, layer.hidden_size)
    if isinstance(layer, LSTM):
        return (rng.standard_normal(shape), rng.standard_normal(shape))
    return rng.standard_normal(shape)


# -- gradient checks -------------------------------------------------------------

KINDS = {
    "rnn_tanh": lambda **kw: RNN(IN, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: RNN(IN, H, nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTM(IN, H, **kw),
    "gru": lambda **kw: GRU(IN, H, **kw),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_every_step_with_initial_state(float64, rng, kind):
    layer = KINDS[kind]()
    errors = check_bptt(layer, _seq(rng), _state(rng, layer))
    assert {"x", "h0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} <= set(errors)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_loss_on_last_step_only(float64, rng, kind):
    layer = KINDS[kind]()
    x = _seq(rng)
    out = layer(x)
    r_out = np.zeros(out[0].shape)
    r_out[-1] = rng.standard_normal(r_out[-1].shape)
    state_weights = (None, None) if kind == "lstm" else None
    errors = check_bptt(layer, x, weights=(r_out, state_weights))
    # The first step's input still receives gradient through the recurrence.
    layer.zero_grad()
    layer(x)
    grad_x = layer.backward(r_out, state_weights)
    assert np.abs(grad_x[0]).max() > 0
    assert errors["x"] < 1e-6


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_two_layers_bidirectional(float64, rng, kind):
    layer = KINDS[kind](num_layers=2, bidirectional=True)
    errors = check_bptt(layer, _seq(rng), _state(rng, layer))
    assert "weight_hh_l1_reverse" in errors and "bias_ih_l0_reverse" in errors


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_gradients_batch_first_without_bias(float64, rng, kind):
    layer = KINDS[kind](num_layers=2, batch_first=True, bias=False)
    assert not any("bias" in name for name, _ in layer.named_parameters())
    check_bptt(layer, _seq(rng, batch_first=True), _state(rng, layer))


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_gradients_last_output_bidirectional(float64, rng, kind):
    layer = KINDS[kind](bidirectional=True, batch_first=True, output="last")
    x = _seq(rng, batch_first=True)
    assert layer(x).shape == (N, 2 * H)
    check_bptt(layer, x)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradients_sequence_output_with_dropout(float64, rng, kind):
    layer = KINDS[kind](num_layers=2, dropout=0.4, output="sequence")
    check_bptt(layer, _seq(rng), reseed=7)


@pytest.mark.parametrize("where", ["x", "h0", "weight_hh_l0"])
def test_check_bptt_catches_a_1pc_error_in_one_entry(float64, rng, monkeypatch, where):
    """check_bptt itself can fail: 1% off in one entry of an array checked along random directions."""
    layer = GRU(IN, H)
    x, h0 = _seq(rng), rng.standard_normal((1, N, H))
    original = GRU.backward

    def backward(self, *args, **kwargs):
        grad_x = original(self, *args, **kwargs)
        if where == "x":
            grad_x = grad_x.copy()
            grad_x[2, 1, 0] *= 1.01
        elif where == "h0":
            self.grad_h0[0, 1, 2] *= 1.01
        else:
            self.weight_hh_l0.grad[5, 1] *= 1.01
        return grad_x

    monkeypatch.setattr(GRU, "backward", backward)
    with pytest.raises(AssertionError, match=rf"gradient check failed: {{'{where}'"):
        check_bptt(layer, x, h0)


@pytest.mark.parametrize("cls", [RNNCell, GRUCell])
def test_cell_gradients(float64, rng, cls):
    check_gradients(cls(IN, H), rng.standard_normal((N, IN)))
    cell = cls(IN, H, bias=False)
    check_bptt(cell, rng.standard_normal((N, IN)), rng.standard_normal((N, H)))


def test_lstm_cell_gradients(float64, rng):
    cell = LSTMCell(IN, H)
    errors = check_bptt(
        cell, rng.standard_normal((N, IN)), (rng.standard_normal((N, H)), rng.standard_normal((N, H)))
    )
    assert {"h0", "c0", "weight_ih", "bias_hh"} <= set(errors)


def test_gradients_accumulate(float64, rng):
    layer = GRU(IN, H)
    x = _seq(rng)
    g = rng.standard_normal((L, N, H))
    layer(x)
    layer.backward(g)
    first = layer.weight_hh_l0.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight_hh_l0.grad, 2 * first)


# -- the per-call context: several calls of one layer, nothing kept on the layer --

CONTEXT_KINDS = {
    "rnn_cell": (lambda: RNNCell(IN, H, nonlinearity="relu"), (N, IN)),
    "lstm_cell": (lambda: LSTMCell(IN, H), (N, IN)),
    "gru_cell": (lambda: GRUCell(IN, H, bias=False), (N, IN)),
    "rnn": (lambda: RNN(IN, H, num_layers=2, dropout=0.3), (L, N, IN)),
    "lstm": (lambda: LSTM(IN, H, bidirectional=True, batch_first=True), (N, L, IN)),
    "gru": (lambda: GRU(IN, H, num_layers=2, output="last"), (L, N, IN)),
}


def _grad_like(rng, out):
    if isinstance(out, (tuple, list)):
        return tuple(_grad_like(rng, o) for o in out)
    return rng.standard_normal(out.shape)


def _call(layer, ctx, x, seed):
    framework.set_seed(seed)  # the same dropout mask for a call and its reference
    return layer.forward(ctx, x)


@pytest.mark.parametrize("kind", list(CONTEXT_KINDS))
def test_two_calls_with_explicit_contexts_sum_their_gradients(float64, rng, kind):
    make, shape = CONTEXT_KINDS[kind]
    layer = make()
    xs = [rng.standard_normal(shape), rng.standard_normal(shape)]
    seeds = [11, 12]
    gs = [_grad_like(rng, _call(layer, Context(True), x, s)) for x, s in zip(xs, seeds)]

    single = []
    for x, g, s in zip(xs, gs, seeds):
        layer.zero_grad()
        ctx = Context(True)
        _call(layer, ctx, x, s)
        dx = layer.backward(ctx, g)
        grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
        single.append((dx, grads, ctx.grad_h0))

    layer.zero_grad()
    c1, c2 = Context(True), Context(True)
    _call(layer, c1, xs[0], seeds[0])
    _call(layer, c2, xs[1], seeds[1])
    dx2 = layer.backward(c2, gs[1])  # in reverse order, as a graph's backward walks
    dx1 = layer.backward(c1, gs[0])
    np.testing.assert_allclose(dx1, single[0][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx2, single[1][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c1.grad_h0, single[0][2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c2.grad_h0, single[1][2], rtol=1e-12, atol=1e-14)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, single[0][1][name] + single[1][1][name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", list(CONTEXT_KINDS))
def test_inference_call_keeps_nothing_on_the_layer(rng, kind):
    make, shape = CONTEXT_KINDS[kind]
    layer = make()
    x = rng.standard_normal(shape).astype(np.float32)
    layer(x)  # a manual call first: what it keeps must not grow either
    before = dict(vars(layer))
    out = layer.forward(Context(False, record=False), x)
    assert out is not None
    after = vars(layer)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), [k for k in before if after[k] is not before[k]]


def test_needs_input_grad_false_skips_dx_but_not_parameter_gradients(float64, rng):
    layer = LSTM(IN, H, num_layers=2)
    x = _seq(rng)
    ctx = Context(True, needs_input_grad=False)
    out, _ = layer.forward(ctx, x)
    assert layer.backward(ctx, np.ones_like(out)) is None
    assert np.abs(layer.weight_ih_l0.grad).sum() > 0 and ctx.grad_h0.shape == (2, N, H)


# -- formula-level references in PyTorch's layout -------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _ref_lstm(x, w_ih, w_hh, b_ih, b_hh, h, c):
    outs = []
    for x_t in x:
        i, f, g, o = np.split(x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
        i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


def _ref_gru(x, w_ih, w_hh, b_ih, b_hh, h):
    outs = []
    w_ir, w_iz, w_in = np.split(w_ih, 3)
    w_hr, w_hz, w_hn = np.split(w_hh, 3)
    b_ir, b_iz, b_in = np.split(b_ih, 3)
    b_hr, b_hz, b_hn = np.split(b_hh, 3)
    for x_t in x:
        r = _sigmoid(x_t @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = _sigmoid(x_t @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        n = np.tanh(x_t @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        h = (1 - z) * n + z * h
        outs.append(h)
    return np.stack(outs), h


def _random_weights(rng, layer):
    state = {name: rng.uniform(-0.6, 0.6, p.shape) for name, p in layer.named_parameters()}
    layer.load_state_dict(state)
    return state


def test_lstm_matches_formula_reference(float64, rng):
    layer = LSTM(IN, H, bidirectional=True)
    w = _random_weights(rng, layer)
    x = _seq(rng)
    h0, c0 = rng.standard_normal((2, N, H)), rng.standard_normal((2, N, H))
    out, (h_n, c_n) = layer(x, (h0, c0))
    fwd = _ref_lstm(x, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"], h0[0], c0[0])
    rev = _ref_lstm(
        x[::-1],
        w["weight_ih_l0_reverse"],
        w["weight_hh_l0_reverse"],
        w["bias_ih_l0_reverse"],
        w["bias_hh_l0_reverse"],
        h0[1],
        c0[1],
    )
    np.testing.assert_allclose(out[:, :, :H], fwd[0], atol=1e-12)
    np.testing.assert_allclose(out[:, :, H:], rev[0][::-1], atol=1e-12)
    np.testing.assert_allclose(h_n, np.stack([fwd[1], rev[1]]), atol=1e-12)
    np.testing.assert_allclose(c_n, np.stack([fwd[2], rev[2]]), atol=1e-12)


def test_gru_matches_formula_reference(float64, rng):
    layer = GRU(IN, H, num_layers=2)
    w = _random_weights(rng, layer)
    x = _seq(rng)
    h0 = rng.standard_normal((2, N, H))
    out, h_n = layer(x, h0)
    y0, h_a = _ref_gru(x, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"], h0[0])
    y1, h_b = _ref_gru(y0, w["weight_ih_l1"], w["weight_hh_l1"], w["bias_ih_l1"], w["bias_hh_l1"], h0[1])
    np.testing.assert_allclose(out, y1, atol=1e-12)
    np.testing.assert_allclose(h_n, np.stack([h_a, h_b]), atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_formula_reference(float64, rng, nonlinearity):
    layer = RNN(IN, H, nonlinearity=nonlinearity, batch_first=True)
    w = _random_weights(rng, layer)
    x = _seq(rng, batch_first=True)
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
    h = np.zeros((N, H))
    expected = []
    for t in range(L):
        h = act(x[:, t] @ w["weight_ih_l0"].T + w["bias_ih_l0"] + h @ w["weight_hh_l0"].T + w["bias_hh_l0"])
        expected.append(h)
    out, h_n = layer(x)
    np.testing.assert_allclose(out, np.stack(expected, axis=1), atol=1e-12)
    np.testing.assert_allclose(h_n[0], h, atol=1e-12)


def test_cells_match_one_step_of_the_layers(float64, rng):
    x = rng.standard_normal((1, N, IN))
    for layer_cls, cell_cls in ((RNN, RNNCell), (LSTM, LSTMCell), (GRU, GRUCell)):
        layer, cell = layer_cls(IN, H), cell_cls(IN, H)
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
        out, _ = layer(x)
        h = cell(x[0])
        np.testing.assert_allclose(h[0] if isinstance(h, tuple) else h, out[0], atol=1e-12)


def test_torch_parity(float64, rng):
    torch = pytest.importorskip("torch")
    x = _seq(rng, batch_first=True)
    for ours, theirs in (
        (RNN(IN, H, num_layers=2, bidirectional=True, batch_first=True), torch.nn.RNN),
        (LSTM(IN, H, num_layers=2, bidirectional=True, batch_first=True), torch.nn.LSTM),
        (GRU(IN, H, num_layers=2, bidirectional=True, batch_first=True), torch.nn.GRU),
    ):
        ref = theirs(IN, H, num_layers=2, bidirectional=True, batch_first=True).double()
        ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        out_t, _ = ref(xt)
        out, _ = ours(x)
        np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-12)
        g = rng.standard_normal(out.shape)
        out_t.backward(torch.from_numpy(g))
        ours.zero_grad()
        np.testing.assert_allclose(ours.backward(g, None), xt.grad.numpy(), atol=1e-12)
        for name, p in ref.named_parameters():
            np.testing.assert_allclose(getattr(ours, name).grad, p.grad.numpy(), atol=1e-12, err_msg=name)


# -- training smoke test ---------------------------------------------------------


def test_lstm_learns_sign_sum():
    framework.set_seed(0)
    data_rng = np.random.default_rng(0)
    lstm = LSTM(1, 8, batch_first=True, output="last")
    head = Linear(8, 1)
    x = data_rng.standard_normal((64, 6, 1)).astype(np.float32)
    y = np.sign(x).sum(axis=(1, 2))[:, None].astype(np.float32)
    params = lstm.parameters() + head.parameters()
    losses = []
    for _ in range(150):  # the loss falls below a tenth of its start at step 106 (0.078 at 150)
        pred = head(lstm(x))
        losses.append(float(np.mean((pred - y) ** 2)))
        for p in params:
            p.zero_grad()
        lstm.backward(head.backward(2 * (pred - y) / len(x)))
        for p in params:
            p.data -= 0.1 * p.grad
    assert lstm.weight_ih_l0.data.dtype == np.float32
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


# -- API, shapes, config, errors -----------------------------------------------


def test_output_modes_and_shapes(rng):
    x = rng.standard_normal((N, L, IN)).astype(np.float32)
    both = LSTM(IN, H, num_layers=2, batch_first=True, bidirectional=True)
    out, (h_n, c_n) = both(x)
    assert out.shape == (N, L, 2 * H) and h_n.shape == c_n.shape == (4, N, H)
    assert out.dtype == np.float32
    # one shape per array forward returns, flat: the sequence, then h_n and c_n
    assert both.output_shape((None, L, IN)) == [(None, L, 2 * H), (4, None, H), (4, None, H)]
    seq = GRU(IN, H, batch_first=True, output="sequence")
    assert seq(x).shape == (N, L, H) == seq.output_shape((N, L, IN))
    last = RNN(IN, H, batch_first=True, output="last")
    full = RNN(IN, H, batch_first=True)
    full.load_state_dict(last.state_dict())
    np.testing.assert_allclose(last(x), full(x)[0][:, -1])
    assert last.output_shape((None, L, IN)) == (None, H)
    assert RNN(IN, H, output="last").output_shape((L, None, IN)) == (None, H)


def test_pytorch_parameter_names_and_shapes():
    layer = LSTM(IN, H, num_layers=2, bidirectional=True)
    shapes = {name: p.shape for name, p in layer.named_parameters()}
    assert list(shapes)[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert shapes["weight_ih_l0"] == (4 * H, IN)
    assert shapes["weight_ih_l1_reverse"] == (4 * H, 2 * H)
    assert shapes["bias_hh_l1"] == (4 * H,)
    assert len(shapes) == 16
    assert GRU(IN, H).weight_hh_l0.shape == (3 * H, H)
    assert RNNCell(IN, H).weight_ih.shape == (H, IN)


def test_initialisation_is_seeded_and_bounded():
    framework.set_seed(5)
    a = GRU(IN, 9)
    framework.set_seed(5)
    b = GRU(IN, 9)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.data.dtype == framework.get_default_dtype()
        assert np.abs(p.data).max() <= 1 / 3 and np.abs(p.data).max() > 0.2, name


def test_dropout_only_in_training_and_reproducible(rng):
    x = rng.standard_normal((L, N, IN)).astype(np.float32)
    layer = LSTM(IN, H, num_layers=2, dropout=0.5, output="sequence")
    framework.set_seed(1)
    a = layer(x)
    framework.set_seed(1)
    b = layer(x)
    c = layer(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    layer.eval()
    np.testing.assert_array_equal(layer(x), layer(x))


def test_registered_and_config_round_trip():
    from framework import layers

    for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
        assert name in layers.names()
    layer = layers.get(
        "lstm",
        input_size=IN,
        hidden_size=H,
        num_layers=2,
        batch_first=True,
        dropout=0.25,
        output="last",
        name="enc",
    )
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert [(n, p.shape) for n, p in clone.named_parameters()] == [
        (n, p.shape) for n, p in layer.named_parameters()
    ]
    rnn = layers.get(
        {"class_name": "RNN", "config": RNN(IN, H, nonlinearity="relu", bias=False).get_config()}
    )
    assert rnn.nonlinearity == "relu" and rnn.bias_ih_l0 is None
    cell = RNNCell.from_config(RNNCell(IN, H, nonlinearity="relu").get_config())
    assert cell.get_config() == {"input_size": IN, "hidden_size": H, "bias": True, "nonlinearity": "relu"}


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: RNN(IN, 0), "hidden_size"),
        (lambda: LSTM(0, H), "input_size"),
        (lambda: GRU(IN, H, num_layers=0), "num_layers"),
        (lambda: RNN(IN, H, nonlinearity="sigmoid"), "'tanh', 'relu'"),
        (lambda: RNNCell(IN, H, nonlinearity="gelu"), "'tanh', 'relu'"),
        (lambda: LSTM(IN, H, dropout=1.0), "dropout"),
        (lambda: GRU(IN, H, output="final"), "'both', 'sequence', 'last'"),
        (lambda: LSTM(IN, H, batch_first="yes"), "batch_first"),
    ],
)
def test_bad_config(make, needle):
    with pytest.raises(ConfigError, match=needle):
        make()


def test_bad_inputs(rng):
    layer = LSTM(IN, H, name="enc")
    with pytest.raises(ShapeError, match=r"LSTM layer 'enc'.*\(L, N, 3\).*got \(2, 3\)"):
        layer(np.zeros((2, IN), np.float32))
    with pytest.raises(ShapeError, match=r"\(L, N, 3\).*got \(5, 2, 7\)"):
        layer(np.zeros((L, N, 7), np.float32))
    x = np.zeros((L, N, IN), np.float32)
    layer(x)
    with pytest.raises(ShapeError, match=r"got \(5, 2, 7\)"):
        layer(np.zeros((L, N, 7), np.float32))
    with pytest.raises(ShapeError, match="length 0"):
        layer(np.zeros((0, N, IN), np.float32))
    with pytest.raises(ShapeError, match=r"h0 of shape \(1, 2, 4\).*got \(2, 2, 4\)"):
        layer(x, (np.zeros((2, N, H)), np.zeros((1, N, H))))
    with pytest.raises(ShapeError, match="pair"):
        layer(x, np.zeros((1, N, H)))
    layer(x)
    with pytest.raises(ShapeError, match="grad_output"):
        layer.backward(np.zeros((L, N, H + 1)), None)
    with pytest.raises(ShapeError, match=r"\(N, L, 3\)"):
        GRU(IN, H, batch_first=True)(np.zeros((N, L), np.float32))
    with pytest.raises(ShapeError, match=r"GRU layer.*\(N, L, 3\).*got \(2, 0, 3\)|length 0"):
        GRU(IN, H, batch_first=True)(np.zeros((N, 0, IN), np.float32))
    with pytest.raises(ShapeError, match=r"RNNCell layer expected input of shape \(N, 3\)"):
        RNNCell(IN, H)(np.zeros((L, N, IN), np.float32))
    with pytest.raises(ShapeError, match=r"h0 of shape \(2, 4\)"):
        GRUCell(IN, H)(np.zeros((N, IN), np.float32), np.zeros((N, H + 1)))
    last = RNN(IN, H, output="last")
    last(x)
    with pytest.raises(FrameworkError):
        last.backward(np.zeros((L, N, H)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTM(IN, H, num_layers=2, bidirectional=True, batch_first=True, output="sequence"),
        lambda: GRU(IN, H, batch_first=True, output="last"),
        lambda: RNN(IN, H, num_layers=2, dropout=0.3, batch_first=True, output="sequence"),
        lambda: RNNCell(IN, H, nonlinearity="relu"),
        lambda: GRUCell(IN, H),
    ],
)
def test_conformance_kit(make):
    check_layer = pytest.importorskip("framework.testing").check_layer
    layer = make()
    shape = (N, IN) if isinstance(layer, (RNNCell, GRUCell)) else (N, L, IN)
    report = check_layer(layer, shape)
    assert "gradients" in str(report) and "checkpoint" in str(report)


def test_in_a_sequential_model(rng):
    sequential = pytest.importorskip("framework").Sequential
    model = sequential([LSTM(IN, 8, batch_first=True, output="last"), Linear(8, 3)])
    x = rng.standard_normal((N, L, IN)).astype(np.float32)
    y = model(x)
    assert y.shape == (N, 3)
    grad_x = model.backward(np.ones_like(y))
    assert grad_x.shape == x.shape and np.abs(grad_x).sum() > 0


def test_backward_needs_a_fresh_forward(rng):
    layer = GRU(IN, H)
    out, _ = layer(rng.standard_normal((L, N, IN)).astype(np.float32))
    layer.backward(np.ones_like(out))
    with pytest.raises(NotBuiltError, match="forward"):
        layer.backward(np.ones_like(out))


def test_docstring_examples():
    import doctest

    import plugins.recurrent_cells
    import plugins.recurrent_layers

    attempted = 0
    for module in (plugins.recurrent_cells, plugins.recurrent_layers):
        result = doctest.testmod(module)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 10


def test_predict_joins_final_states_along_their_batch_axis():
    """predict of an LSTM(output="both") model: the sequence joins on axis 0, h_n and c_n
    (num_layers, N, H) on axis 1, as one call on all the samples gives them."""
    from framework import Sequential

    model = Sequential([LSTM(3, 4, num_layers=2, batch_first=True)])
    model.build((None, 5, 3))
    x = np.random.default_rng(0).standard_normal((7, 5, 3)).astype(np.float32)
    seq, (h, c) = model.predict(x, batch_size=3)
    whole_seq, (whole_h, whole_c) = model.predict(x, batch_size=7)
    assert seq.shape == (7, 5, 4) and h.shape == c.shape == (2, 7, 4)
    np.testing.assert_allclose(seq, whole_seq, rtol=1e-6)
    np.testing.assert_allclose(h, whole_h, rtol=1e-6)
    np.testing.assert_allclose(c, whole_c, rtol=1e-6)
