"""A model's edges: what ``backward`` is given, what layers may be named, calls pinned to a mode.

- ``grad_out``: a float64 gradient given to a float32 layer or model is cast
  once, at the edge, to the dtype of the output it differentiates (as inputs
  are cast for ``forward``), so the backward runs in the model's dtype; a
  gradient of the wrong shape or count is a FrameworkError naming the model.
- Names: ``"."`` joins ``state_dict()`` keys, so it is refused in layer and
  model names (PyTorch: "module name can't contain '.'"); ``Input`` names may
  hold it (ONNX's ``"input.1"``), as an input holds no state.
- ``layer(x, training=True/False)`` on a placeholder pins that call's mode in
  ``predict``, ``fit`` and ``backward`` (Keras: MC dropout, a BatchNorm kept on
  its running statistics while fine-tuning); the config keeps it; the ONNX and
  NumPy exporters, which write inference only, refuse ``training=True``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import Input, Layer, Model, Sequential
from framework.errors import ConfigError, DataError, ExportError, ShapeError
from framework.export import numpy_predictor
from framework.layers import (
    LSTM,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool2d,
    MultiheadAttention,
    ReLU,
    Softmax,
)
from framework.models.serialize import deserialize_model, serialize_model

RNG = np.random.default_rng(7)


def _x(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# =============================================================================================
# (a) grad_out is cast to the output's dtype, its shape checked, at the model's edge
# =============================================================================================


def _family(kind):
    if kind == "linear":
        return [Linear(6, 5, activation="tanh"), Linear(5, 3)], (8, 6)
    if kind == "conv_bn":
        return [Conv2d(2, 3, 3, padding=1), BatchNorm(3), ReLU(), MaxPool2d(2), Flatten(), Linear(12, 3)], (
            8,
            2,
            4,
            4,
        )
    if kind == "lstm":
        return [LSTM(4, 5, batch_first=True, output="last"), Linear(5, 3)], (8, 3, 4)
    return [MultiheadAttention(4, 2), LayerNorm(4), Flatten(), Linear(12, 3)], (8, 3, 4)


def _run(model, x, g):
    model.zero_grad()
    out = model.forward(x)
    dx = model.backward(g)
    return out, dx, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["linear", "conv_bn", "lstm", "mha"])
@pytest.mark.parametrize("model_dtype, grad_dtype", [("float32", "float64"), ("float64", "float32")])
def test_sequential_backward_runs_in_the_model_dtype(kind, model_dtype, grad_dtype):
    with framework.runtime.dtype.default_dtype(model_dtype):
        framework.set_seed(3)
        layers, shape = _family(kind)
        model = Sequential(layers)
    x = _x(shape, model_dtype)
    g = RNG.standard_normal((shape[0], 3)).astype(grad_dtype)
    _, dx_same, grads_same = _run(model, x, g.astype(model_dtype))
    out, dx, grads = _run(model, x, g)
    assert out.dtype == dx.dtype == np.dtype(model_dtype)
    # cast once at the edge: bit for bit the backward of the gradient given in the model's dtype
    np.testing.assert_array_equal(dx, dx_same)
    for a, b in zip(grads, grads_same):
        assert a.dtype == np.dtype(model_dtype)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Linear(5, 4), (3, 5)),
        (lambda: Conv2d(2, 3, 3), (2, 2, 5, 5)),
        (lambda: LayerNorm(5), (3, 5)),
        (lambda: ReLU(), (3, 5)),
        (lambda: LSTM(5, 4, batch_first=True, output="sequence"), (2, 3, 5)),
    ],
    ids=["linear", "conv", "layernorm", "relu", "lstm"],
)
def test_single_layer_backward_casts_a_float64_gradient(make, shape):
    layer = make()
    x = _x(shape)
    y = layer.forward(x)
    g = RNG.standard_normal(y.shape)
    dx32 = layer.backward(g.astype(np.float32))
    grads32 = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(g)  # float64
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, dx32)
    for p, expected in zip(layer.parameters(), grads32):
        assert p.grad.dtype == np.float32
        np.testing.assert_array_equal(p.grad, expected)


class _Recorder(Layer):
    """An older-form layer (state on itself): records the dtype its backward receives."""

    def forward(self, x):
        return x * 2.0

    def backward(self, grad_out):
        self.seen = grad_out.dtype
        return grad_out * 2.0


class _ToIndex(Layer):
    """Integer outputs: a gradient of them is left as given (nothing to cast to)."""

    def forward(self, ctx, x):
        return np.zeros(x.shape, dtype=np.int64)

    def backward(self, ctx, grad_out):
        ctx.seen = grad_out.dtype
        return grad_out


def test_older_form_layer_receives_its_output_dtype_by_hand_and_in_a_model():
    layer = _Recorder()
    layer.forward(_x((2, 3)))
    layer.backward(np.ones((2, 3)))
    assert layer.seen == np.float32
    model = Sequential([Linear(3, 3), _Recorder()])
    model.forward(_x((2, 3)))
    assert model.backward(np.ones((2, 3))).dtype == np.float32
    assert model.layers[1].seen == np.float32


def test_integer_output_gradient_is_not_cast():
    layer = _ToIndex()
    from framework.base.context import Context

    ctx = Context(True)
    layer.forward(ctx, _x((2, 3)))
    assert layer.backward(ctx, np.ones((2, 3))).dtype == np.float64
    assert ctx.seen == np.float64


class _Residual(Model):
    """A hand-written model: its own forward and backward over a child layer."""

    def __init__(self):
        super().__init__(name="residual")
        self.fc = Linear(3, 3)

    def forward(self, ctx, x):
        return x + self.fc.forward(ctx.child("fc"), x)

    def backward(self, ctx, grad_out):
        ctx.seen = grad_out.dtype
        return grad_out + self.fc.backward(ctx.child("fc"), grad_out)


def test_hand_written_model_subclass_receives_its_output_dtype():
    from framework.base.context import Context

    model = _Residual()
    ctx = Context(True)
    model.forward(ctx, _x((2, 3)))
    assert model.backward(ctx, np.ones((2, 3))).dtype == np.float32
    assert ctx.seen == np.float32
    with pytest.raises(ShapeError, match=r"_Residual layer 'residual'.*\(2, 3\).*got \(2, 4\)"):
        model.backward(ctx, np.ones((2, 4)))


def test_float16_model_backward_stays_float16():
    with framework.runtime.dtype.default_dtype("float16"):
        model = Sequential([Linear(4, 3, activation="tanh"), Linear(3, 2)])
    x = _x((5, 4), np.float16)
    g = RNG.standard_normal((5, 2)).astype(np.float32)
    _, dx16, grads16 = _run(model, x, g.astype(np.float16))
    _, dx, grads = _run(model, x, g)
    assert dx.dtype == np.float16
    np.testing.assert_array_equal(dx, dx16)
    for a, b in zip(grads, grads16):
        assert a.dtype == np.float16
        np.testing.assert_array_equal(a, b)


def _two_outputs():
    x = Input((4,), name="x")
    h = Linear(4, 5, activation="tanh", name="trunk")(x)
    return Model(x, [Linear(5, 2, name="head_a")(h), Linear(5, 3, name="head_b")(h)], name="net")


def test_functional_model_with_two_outputs_casts_each_gradient():
    model = _two_outputs()
    x = _x((6, 4))
    ga, gb = RNG.standard_normal((6, 2)), RNG.standard_normal((6, 3))
    _, dx32, grads32 = _run(model, x, [ga.astype(np.float32), gb.astype(np.float32)])
    _, dx, grads = _run(model, x, (ga, gb))
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, dx32)
    for a, b in zip(grads, grads32):
        np.testing.assert_array_equal(a, b)
    # None: that output has no gradient, the same as zeros
    _, dx_none, _ = _run(model, x, [None, gb])
    _, dx_zero, _ = _run(model, x, [np.zeros((6, 2)), gb])
    np.testing.assert_array_equal(dx_none, dx_zero)


@pytest.mark.parametrize(
    "grad, error, pattern",
    [
        (
            lambda: [np.ones((6, 2))],
            DataError,
            r"Model layer 'net'.*list of 2 output gradients, got a list of 1",
        ),
        (lambda: np.ones((6, 2)), DataError, r"Model layer 'net'.*list of 2 output gradients, got ndarray"),
        (
            lambda: [np.ones((6, 2)), np.ones((6, 2))],
            ShapeError,
            r"Model layer 'net'.*output 1 \('head_b'\) of shape \(6, 3\), got \(6, 2\)",
        ),
        (
            lambda: [np.ones((5, 2)), np.ones((6, 3))],
            ShapeError,
            r"Model layer 'net'.*output 0 \('head_a'\) of shape \(6, 2\), got \(5, 2\)",
        ),
        (lambda: [[1.0], np.ones((6, 3))], ShapeError, r"output 0 \('head_a'\) of shape \(6, 2\), got \?"),
    ],
    ids=["too-few", "array-not-list", "wrong-shape", "wrong-batch", "not-an-array"],
)
def test_bad_gradients_of_a_two_output_model_name_it(grad, error, pattern):
    model = _two_outputs()
    model.forward(_x((6, 4)))
    with pytest.raises(error, match=pattern):
        model.backward(grad())


@pytest.mark.parametrize("functional", [False, True])
def test_bad_gradient_shape_of_a_one_output_model_names_it(functional):
    if functional:
        x = Input((4,))
        model = Model(x, Linear(4, 2)(x), name="net")
    else:
        model = Sequential([Linear(4, 2)], name="net")
    model.forward(_x((6, 4)))
    kind = "Model" if functional else "Sequential"
    with pytest.raises(ShapeError, match=rf"{kind} layer 'net'.*\(6, 2\).*got \(6, 3\)"):
        model.backward(np.ones((6, 3)))


def test_fused_softmax_gradient_of_a_functional_model_stays_float32():
    """The fused ``(p - y) / N`` enters below the softmax: checked against the closed form."""
    x_in = Input((4,))
    model = Model(x_in, Softmax()(Linear(4, 3, name="logits")(x_in)))
    model.compile(framework.optimizers.SGD(learning_rate=0.5), "categorical_crossentropy")
    x = _x((8, 4))
    y = np.eye(3)[RNG.integers(0, 3, 8)]  # float64 targets
    w0, b0 = (p.data.astype(np.float64) for p in model.get_layer("logits").parameters())
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    z = x.astype(np.float64) @ w0.T + b0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - y) / 8
    weight, bias = model.get_layer("logits").parameters()
    assert weight.data.dtype == weight.grad.dtype == np.float32
    np.testing.assert_allclose(weight.data, w0 - 0.5 * g.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.data, b0 - 0.5 * g.sum(0), rtol=1e-5, atol=1e-6)


# =============================================================================================
# (b) '.' in layer and model names
# =============================================================================================

DOTTED = ["a.b", ".", "a.", ".b", "block.0.conv"]


@pytest.mark.parametrize("name", DOTTED)
@pytest.mark.parametrize(
    "make",
    [
        lambda n: Linear(3, 3, name=n),
        lambda n: Dropout(0.5, name=n),
        lambda n: BatchNorm(3, name=n),
        lambda n: Sequential([Linear(3, 3)], name=n),
        lambda n: Model(Input((3,)), name=n),
    ],
    ids=["Linear", "Dropout", "BatchNorm", "Sequential", "Model"],
)
def test_dotted_names_are_refused_naming_layer_expected_and_actual(make, name):
    with pytest.raises(ConfigError) as info:
        make(name)
    message = str(info.value)
    assert repr(name) in message and "must not contain '.'" in message and "state_dict" in message


def test_the_collision_it_prevents_and_a_legal_spelling():
    with pytest.raises(ConfigError, match=r"Linear layer 'a\.b'.*'a_b'"):
        Sequential([Sequential([Linear(3, 3, name="b")], name="a"), Linear(3, 3, name="a.b")])
    model = Sequential([Sequential([Linear(3, 3, name="b")], name="a"), Linear(3, 3, name="a_b")])
    keys = list(model.state_dict())
    assert keys == ["a.b.weight", "a.b.bias", "a_b.weight", "a_b.bias"]


@pytest.mark.parametrize("functional", [False, True])
def test_a_dotted_name_set_after_construction_is_refused_when_placed_in_a_model(functional):
    layer = Linear(3, 3)
    layer.name = "a.b"
    with pytest.raises(ConfigError, match=r"Linear layer 'a\.b'.*must not contain '\.'"):
        if functional:
            x = Input((3,))
            Model(x, layer(x))
        else:
            Sequential([layer])


@pytest.mark.parametrize("name", ["", 3, b"x"])
def test_other_bad_names_are_still_refused(name):
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        Linear(3, 3, name=name)


def test_input_names_may_hold_a_dot():
    x = Input((3,), name="input.1")
    model = Model(x, Linear(3, 2, name="fc")(x))
    data = _x((4, 3))
    np.testing.assert_array_equal(model.predict({"input.1": data}), model.predict(data))
    assert list(model.state_dict()) == ["fc.weight", "fc.bias"]
    rebuilt = Model.from_config(model.get_config())
    assert rebuilt.layers[0].name == "input.1"


def test_a_config_with_a_dotted_layer_name_is_refused_not_half_loaded():
    config = serialize_model(Sequential([Linear(3, 3, name="fc")]))
    config["config"]["layers"][0]["config"]["name"] = "f.c"
    with pytest.raises(ConfigError, match=r"'f\.c'"):
        deserialize_model(config)


def test_onnx_graph_with_a_dotted_name_imports(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import framework.onnx

    weight = numpy_helper.from_array(np.ones((3, 2), np.float32), "fc.weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input.1", "fc.weight"], ["out.2"])],
        "model.v1",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("out.2", TensorProto.FLOAT, [None, 2])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    model = framework.onnx.load(tmp_path / "m.onnx")
    np.testing.assert_allclose(model.predict(np.ones((2, 3), np.float32)), np.full((2, 2), 3.0))


# =============================================================================================
# (c) layer(x, training=...) pins that call's mode
# =============================================================================================


def _mc_dropout(p=0.5, pin=True):
    x = Input((200,))
    return Model(x, Dropout(p, name="drop")(x, training=pin))


def _check_dropped(out, p):
    dropped = out == 0
    n = out.size
    # a binomial count of dropped units: within 6 standard deviations of n p
    assert abs(dropped.sum() - n * p) < 6 * np.sqrt(n * p * (1 - p))
    np.testing.assert_allclose(out[~dropped], 1.0 / (1.0 - p), rtol=1e-6)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_pinned_to_training_drops_in_predict_evaluate_and_eval_calls(p):
    model = _mc_dropout(p)
    ones = np.ones((50, 200), np.float32)
    _check_dropped(model.predict(ones), p)
    _check_dropped(model.predict(ones, batch_size=7), p)
    model.eval()
    _check_dropped(model(ones), p)
    _check_dropped(model(ones, training=False), p)
    model.compile("sgd", "mse")
    # the loss of the identity is 0; Monte Carlo dropout's is p/(1-p) per unit on average
    loss = model.evaluate(ones, ones, verbose=0)["loss"]
    assert loss == pytest.approx(p / (1 - p), rel=0.1)


def test_unpinned_and_pinned_false_dropout_never_drop():
    ones = np.ones((20, 200), np.float32)
    for pin in (None, False):
        model = _mc_dropout(0.5, pin)
        np.testing.assert_array_equal(model.predict(ones), ones)
    model = _mc_dropout(0.5, False)
    np.testing.assert_array_equal(model(ones, training=True), ones)  # pinned off even in training mode
    assert np.any(_mc_dropout(0.5, None)(ones, training=True) == 0)


def test_pinned_dropout_backward_uses_the_mask_of_its_forward():
    model = _mc_dropout(0.5).eval()
    x = np.ones((10, 200), np.float32)
    y = model.forward(x)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(model.backward(g), g * y)  # y is the scaled mask itself


def test_shared_layer_pinned_at_one_call_only():
    x = Input((200,))
    drop = Dropout(0.5)
    model = Model(x, [drop(x, training=True), drop(x)])
    pinned, free = model.predict(np.ones((20, 200), np.float32))
    _check_dropped(pinned, 0.5)
    np.testing.assert_array_equal(free, 1.0)


def test_nested_model_call_pinned_and_an_inner_pin_wins():
    inner = Sequential([Dropout(0.5)], name="inner")
    x = Input((200,))
    ones = np.ones((20, 200), np.float32)
    _check_dropped(Model(x, inner(x, training=True)).predict(ones), 0.5)
    y = Input((200,))
    inner2 = Model(y, Dropout(0.5)(y, training=True), name="inner2")
    z = Input((200,))
    _check_dropped(Model(z, inner2(z, training=False)).predict(ones), 0.5)


def _bn_model(pin, seed=0):
    framework.set_seed(seed)
    x = Input((4,))
    h = Linear(4, 3, name="fc")(x)
    model = Model(x, BatchNorm(3, name="bn")(h, training=pin))
    bn = model.get_layer("bn")
    bn.running_mean.data[:] = [0.5, -1.0, 2.0]
    bn.running_var.data[:] = [2.0, 0.5, 3.0]
    bn.weight.data[:] = [1.5, 0.7, -1.2]
    bn.bias.data[:] = [0.1, -0.2, 0.3]
    return model


def _bn_inference(model, x):
    fc, bn = model.get_layer("fc"), model.get_layer("bn")
    h = x.astype(np.float64) @ fc.weight.data.T + fc.bias.data
    scale = bn.weight.data / np.sqrt(bn.running_var.data + bn.eps)
    return (h - bn.running_mean.data) * scale + bn.bias.data


def test_batchnorm_pinned_to_inference_uses_running_stats_in_training_calls(float64):
    model = _bn_model(False)
    x = _x((16, 4), np.float64)
    np.testing.assert_allclose(model(x, training=True), _bn_inference(model, x), rtol=1e-12)
    assert model.get_layer("bn").num_batches_tracked == 0


def test_batchnorm_pinned_to_inference_in_fit_matches_torch_eval_mode(float64):
    """Keras's transfer-learning idiom: gamma and beta train, the running statistics stay."""
    torch = pytest.importorskip("torch")
    model = _bn_model(False)
    fc, bn = model.get_layer("fc"), model.get_layer("bn")
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).double()
    with torch.no_grad():
        ref[0].weight.copy_(torch.tensor(fc.weight.data))
        ref[0].bias.copy_(torch.tensor(fc.bias.data))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref[1], name).copy_(torch.tensor(getattr(bn, name).data))
    stats = (bn.running_mean.data.copy(), bn.running_var.data.copy())
    x, y = _x((16, 4), np.float64), _x((16, 3), np.float64)
    model.compile(framework.optimizers.SGD(learning_rate=0.1), "mse")
    model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    ref.eval()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(3):
        for i in (0, 8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(
                ref(torch.tensor(x[i : i + 8])), torch.tensor(y[i : i + 8])
            ).backward()
            opt.step()
    np.testing.assert_array_equal(bn.running_mean.data, stats[0])
    np.testing.assert_array_equal(bn.running_var.data, stats[1])
    for ours, theirs in ((fc.weight, ref[0].weight), (fc.bias, ref[0].bias), (bn.weight, ref[1].weight)):
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.bias.data, ref[1].bias.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_pinned_to_inference_with_threads_keeps_its_statistics():
    model = _bn_model(False)
    bn = model.get_layer("bn")
    stats = bn.running_mean.data.copy()
    model.compile("sgd", "mse")
    model.fit(_x((32, 4)), _x((32, 3)), epochs=1, batch_size=16, verbose=0, threads=2)
    np.testing.assert_array_equal(bn.running_mean.data, stats)


def test_batchnorm_pinned_to_training_normalises_with_batch_statistics_in_predict():
    model = _bn_model(True)
    bn = model.get_layer("bn")
    out = model.predict(_x((64, 4)) * 3 + 1, batch_size=64)
    # batch statistics: each channel's output has mean beta and standard deviation |gamma|
    np.testing.assert_allclose(out.mean(0), bn.bias.data, atol=1e-5)
    np.testing.assert_allclose(out.std(0), np.abs(bn.weight.data), rtol=1e-3)
    assert bn.num_batches_tracked == 1  # and it moves its running statistics, as Keras's does


def test_pin_survives_get_config_from_config_and_serialize_model():
    model = _mc_dropout(0.5)
    call = next(e for e in model.get_config()["layers"] if e["name"] == "drop")["inbound_nodes"][0]
    assert call["training"] is True
    ones = np.ones((20, 200), np.float32)
    _check_dropped(Model.from_config(model.get_config()).predict(ones), 0.5)
    _check_dropped(deserialize_model(serialize_model(model)).predict(ones), 0.5)
    off = deserialize_model(serialize_model(_bn_model(False)))
    assert [c.get("training") for e in off.get_config()["layers"] for c in e["inbound_nodes"]] == [
        None,
        False,
    ]
    plain = _mc_dropout(0.5, None).get_config()
    assert all("training" not in c for e in plain["layers"] for c in e["inbound_nodes"])


def test_a_malformed_pin_in_a_config_is_a_config_error():
    config = _mc_dropout(0.5).get_config()
    next(e for e in config["layers"] if e["name"] == "drop")["inbound_nodes"][0]["training"] = "yes"
    with pytest.raises(
        ConfigError, match=r"Dropout layer 'drop': training must be True, False or None .*got 'yes'"
    ):
        Model.from_config(config)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, [True]])
def test_training_argument_must_be_a_bool_or_none(bad):
    x = Input((3,))
    with pytest.raises(ConfigError, match="Dropout layer 'd': training must be True, False or None"):
        Dropout(0.5, name="d")(x, training=bad)
    with pytest.raises(ConfigError, match="training must be True, False or None"):
        Dropout(0.5, name="d")(np.ones((2, 3), np.float32), training=bad)
    with pytest.raises(ConfigError, match="Sequential layer 's': training must be True, False or None"):
        Sequential([Linear(3, 3)], name="s")(np.ones((2, 3), np.float32), training=bad)
    assert np.any(Dropout(0.5)(np.ones((4, 50), np.float32), training=np.bool_(True)) == 0)


@requires_h5py
def test_pin_survives_save_and_load_model(tmp_path):
    model = _mc_dropout(0.5)
    model.save(tmp_path / "m.h5")
    _check_dropped(framework.load_model(tmp_path / "m.h5").predict(np.ones((20, 200), np.float32)), 0.5)


def _with_linear(pin):
    framework.set_seed(1)
    x = Input((4,))
    return Model(x, Dropout(0.5, name="drop")(Linear(4, 3)(x), training=pin))


def test_numpy_predictor_refuses_a_pin_to_training_and_honours_one_to_inference(tmp_path):
    with pytest.raises(ExportError, match=r"Dropout layer 'drop' is called with training=True"):
        numpy_predictor(_with_linear(True), tmp_path / "on")
    model = _with_linear(False)
    script = numpy_predictor(model, tmp_path / "off")
    namespace = {"__file__": str(script), "__name__": "predict"}
    exec(compile(script.read_text(encoding="utf-8"), str(script), "exec"), namespace)
    x = _x((5, 4))
    np.testing.assert_allclose(namespace["predict"](x), model.predict(x), rtol=1e-6)


def test_onnx_export_refuses_a_pin_to_training_and_honours_one_to_inference(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import framework.onnx

    with pytest.raises(ExportError, match=r"Dropout layer 'drop' is called with training=True"):
        framework.onnx.export(_with_linear(True), tmp_path / "on.onnx")
    model = _with_linear(False)
    framework.onnx.export(model, tmp_path / "off.onnx")
    session = ort.InferenceSession(str(tmp_path / "off.onnx"))
    x = _x((5, 4))
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-5, atol=1e-6)


def test_fit_on_threads_takes_a_dropout_pinned_to_training():
    inp = Input((20,))
    model = Model(inp, Linear(20, 3)(Dropout(0.5)(inp, training=True)))
    model.compile("sgd", "mse")
    x, y = np.ones((32, 20), np.float32), np.ones((32, 3), np.float32)
    model.fit(x, y, batch_size=16, threads=2, verbose=0)
