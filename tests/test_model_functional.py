"""The functional Model: graphs over Input placeholders, merge layers, fan-out gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.layers import (
    Add,
    Average,
    Concatenate,
    Conv2d,
    Flatten,
    Linear,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from framework.models.model import deserialize_model, serialize_model
from framework.testing import check_gradients


def residual_model() -> Model:
    x = Input((4,))
    h = Linear(4, 16, activation="tanh")(x)
    r = Linear(16, 16, activation="tanh")(h)
    h = Add()([h, r])
    return Model(x, Linear(16, 1)(h), name="residual")


def test_merge_layer_gradients(float64, rng):
    a, b, c = (rng.standard_normal((3, 4)) for _ in range(3))
    check_gradients(Add(), [a, b, c])
    check_gradients(Multiply(), [a, b])
    check_gradients(Multiply(), [a, b, c])
    check_gradients(Subtract(), [a, b])
    check_gradients(Average(), [a, b, c])
    check_gradients(Maximum(), [a, b, c])
    check_gradients(Minimum(), [a, b])
    check_gradients(Concatenate(), [a, rng.standard_normal((3, 2))])
    check_gradients(Concatenate(axis=-1), [rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 5))])


def test_merge_layer_values_and_errors(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    np.testing.assert_allclose(Add()([a, b]), a + b)
    np.testing.assert_allclose(Multiply()([a, b, b]), a * b * b)
    np.testing.assert_allclose(Concatenate()([a, b]), np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(Subtract()([a, b]), a - b)
    np.testing.assert_allclose(Average()([a, b]), (a + b) / 2)
    np.testing.assert_allclose(Maximum()([a, b]), np.maximum(a, b))
    np.testing.assert_allclose(Minimum()([a, b]), np.minimum(a, b))
    with pytest.raises(framework.ShapeError, match="exactly 2"):
        Subtract()([Input((3,)), Input((3,)), Input((3,))])
    with pytest.raises(framework.ShapeError, match=r"input 0 is \(None, 4\), input 1 is \(None, 5\)"):
        Add()([Input((4,)), Input((5,))])
    with pytest.raises(framework.ShapeError, match="every size but axis"):
        Concatenate(axis=1)([Input((2, 3)), Input((2, 4))])
    with pytest.raises(framework.ConfigError, match="batch axis"):
        Concatenate(axis=0)
    with pytest.raises(framework.ShapeError, match="at least 2"):
        Add()(Input((3,)))
    assert Concatenate(axis=2)([Input((2, 3)), Input((2, 4))]).shape == (None, 2, 7)


def test_functional_model_gradients_match_finite_differences(float64, rng):
    """A tensor feeding three layers (fan-out) gets the sum of their gradients."""
    x = Input((3,))
    h = Linear(3, 4, activation="tanh")(x)
    a = Linear(4, 4, activation="tanh")(h)
    b = Linear(4, 4)(h)
    merged = Concatenate()([Multiply()([a, b]), h, x])
    model = Model(x, Linear(11, 2)(merged))
    check_gradients(model, rng.standard_normal((5, 3)))


def test_two_input_gradients(float64, rng):
    a, b = Input((3,)), Input((2,))
    shared = Concatenate()([a, b])
    out = Add()([Linear(5, 2)(shared), Linear(2, 2)(b)])
    model = Model([a, b], out)
    check_gradients(model, [rng.standard_normal((4, 3)), rng.standard_normal((4, 2))])


def test_residual_model_trains():
    framework.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 4)).astype(np.float32)
    y = (np.sin(x[:, :1] * 2) + x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    model = residual_model()
    assert [n for n, _ in model.named_children()] == ["input", "linear", "linear_1", "add", "linear_2"]
    model.compile(framework.optimizers.get("adam", learning_rate=0.01), "mse")
    history = model.fit(x, y, epochs=60, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
    assert model.evaluate(x, y)["loss"] < 0.01


def test_two_input_two_output_model_trains_with_a_loss_per_output():
    framework.set_seed(1)
    rng = np.random.default_rng(1)
    xa = rng.normal(size=(300, 3)).astype(np.float32)
    xb = rng.normal(size=(300, 2)).astype(np.float32)
    y_class = (xa[:, 0] + xb[:, 0] > 0).astype(np.int64)
    y_reg = (xa[:, 1:2] - xb[:, 1:2]).astype(np.float32)

    a, b = Input((3,), name="a"), Input((2,), name="b")
    h = Linear(5, 32, activation="relu")(Concatenate()([a, b]))
    cls = Linear(32, 2, name="cls")(h)
    reg = Linear(32, 1, name="reg")(h)
    model = Model([a, b], [cls, reg])
    assert model.output_names == ["cls", "reg"]
    model.compile(
        framework.optimizers.get("adam", learning_rate=0.01),
        loss={"cls": "cross_entropy", "reg": "mse"},
        metrics={"cls": ["accuracy"]},
        loss_weights=[1.0, 0.5],
    )
    history = model.fit([xa, xb], [y_class, y_reg], epochs=40, batch_size=32, verbose=0, validation_split=0.2)
    assert {
        "loss",
        "cls_loss",
        "reg_loss",
        "cls_accuracy",
        "val_loss",
        "val_cls_accuracy",
        "val_cls_loss",
        "val_reg_loss",
    } <= set(history.history)
    for k in range(40):
        assert history.history["loss"][k] == pytest.approx(
            history.history["cls_loss"][k] + 0.5 * history.history["reg_loss"][k], rel=1e-6
        )
    result = model.evaluate([xa, xb], [y_class, y_reg])
    assert result["cls_accuracy"] > 0.95
    assert result["reg_loss"] < 0.02
    assert result["loss"] == pytest.approx(result["cls_loss"] + 0.5 * result["reg_loss"], rel=1e-5)
    out = model.predict([xa, xb], batch_size=64)
    assert isinstance(out, list) and out[0].shape == (300, 2) and out[1].shape == (300, 1)
    with pytest.raises(framework.ConfigError, match=r"missing \['reg'\]"):
        model.compile("sgd", loss={"cls": "cross_entropy"})


def test_sequential_and_functional_give_identical_outputs_and_gradients(rng):
    framework.set_seed(2)
    seq = Sequential([Linear(5, 8, activation="relu"), Linear(8, 8, activation="tanh"), Linear(8, 3)])
    x_in = Input((5,))
    h = x_in
    for layer in (Linear(5, 8, activation="relu"), Linear(8, 8, activation="tanh"), Linear(8, 3)):
        h = layer(h)
    fun = Model(x_in, h)
    state = {k: v for k, v in seq.state_dict().items()}
    fun.load_state_dict(state)  # same names: linear, linear_1, linear_2
    x = rng.standard_normal((6, 5)).astype(np.float32)
    g = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_array_equal(seq(x), fun(x))
    seq.zero_grad()
    fun.zero_grad()
    np.testing.assert_array_equal(seq.backward(g), fun.backward(g))
    for (n1, p1), (n2, p2) in zip(seq.named_parameters(), fun.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.grad, p2.grad)


def test_shared_layer_in_the_older_form_is_refused():
    class Doubler(framework.Layer):  # state on the layer: forward(x) / backward(grad_out)
        def forward(self, x):
            self._x = x
            return x * 2

        def backward(self, grad_out):
            return grad_out * 2

    x = Input((4,))
    twice = Doubler(name="twice")
    y = twice(twice(x))
    with pytest.raises(
        framework.ConfigError, match=r"'twice' is called at two places.*forward\(self, ctx, x\)"
    ):
        Model(x, y)


def test_shared_layer_gradients_sum_over_its_calls():
    x = Input((4,))
    dense = Linear(4, 4, name="twice")
    model = Model(x, dense(dense(x)))
    assert [name for name, _ in model.named_parameters()] == ["twice.weight", "twice.bias"]
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    model.zero_grad()
    out = model(data)
    model.backward(g)
    w, b = dense.weight.data, dense.bias.data
    h = data @ w.T + b
    np.testing.assert_allclose(out, h @ w.T + b, rtol=1e-6)
    g_h = g @ w
    np.testing.assert_allclose(dense.weight.grad, g.T @ h + g_h.T @ data, rtol=1e-5)
    np.testing.assert_allclose(dense.bias.grad, g.sum(0) + g_h.sum(0), rtol=1e-5)


def test_graph_errors():
    x = Input((4,))
    other = Input((4,))
    with pytest.raises(framework.ConfigError, match="not in inputs"):
        Model(x, Add()([x, other]))
    with pytest.raises(framework.ShapeError, match=r"cannot connect Linear layer.*\(None, 8\).*Linear layer"):
        Linear(5, 2)(Linear(4, 8)(x))
    with pytest.raises(framework.ConfigError, match="Input"):
        Model(Linear(4, 4)(x), x)
    with pytest.raises(framework.ConfigError, match="both inputs and outputs"):
        Model(x)
    with pytest.raises(framework.ConfigError, match="two layers are named 'a'"):
        Model(x, Linear(4, 4, name="a")(Linear(4, 4, name="a")(x)))


def test_input_shape_checked_at_the_edge():
    model = residual_model()
    with pytest.raises(
        framework.ShapeError, match=r"Input 'input' expected a batch of shape \(None, 4\), got \(2, 5\)"
    ):
        model.predict(np.zeros((2, 5)))


def test_functional_conv_model_shapes_and_summary():
    x = Input((1, 8, 8))
    a = Conv2d(1, 2, 3, padding=1)(x)
    b = Conv2d(1, 3, 3, padding=1)(x)
    h = Flatten()(Concatenate(axis=1)([a, b]))
    model = Model(x, Linear(output_size=2)(h))
    lines = []
    text = model.summary(print_fn=lines.append)
    assert text == "\n".join(lines)
    assert "(None, 5, 8, 8)" in text and "(None, 320)" in text and "conv2d, conv2d_1" in text
    assert f"Total params: {model.count_params():,}" in text
    assert model.predict(np.zeros((2, 1, 8, 8), dtype=np.float32)).shape == (2, 2)


def test_functional_round_trip_through_config(rng):
    framework.set_seed(3)
    a, b = Input((3,), name="a"), Input((2,), name="b")
    h = Linear(5, 4, activation="relu")(Concatenate()([a, b]))
    model = Model([a, b], [Linear(4, 2)(h), Add()([h, Linear(4, 4)(h)])], name="two")
    data = json.loads(json.dumps(serialize_model(model)))
    assert data["class_name"] == "Model"
    rebuilt = deserialize_model(data)
    assert rebuilt.name == "two"
    assert [n for n, _ in rebuilt.named_parameters()] == [n for n, _ in model.named_parameters()]
    rebuilt.load_state_dict(model.state_dict())
    xs = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)]
    for p, q in zip(model.predict(xs), rebuilt.predict(xs)):
        np.testing.assert_array_equal(p, q)


def test_nested_sequential_inside_functional(rng):
    inner = Sequential([Linear(4, 4, activation="relu"), Linear(4, 4)], name="block")
    x = Input((4,))
    model = Model(x, Add()([x, inner(x)]))
    assert "block.linear.weight" in dict(model.named_parameters())
    xb = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(model(xb), xb + inner(xb), rtol=1e-6)
    rebuilt = deserialize_model(json.loads(json.dumps(serialize_model(model))))
    rebuilt.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(rebuilt(xb), model(xb))


def test_a_layer_with_nested_outputs_in_a_graph():
    """LSTM(output="both") returns (y, (h, c)): the graph gives one placeholder per array,
    and its backward receives the gradients nested back as forward returned them."""
    from framework.layers import LSTM

    x = Input((5, 3))
    seq, h, c = LSTM(3, 4, batch_first=True)(x)
    model = Model(x, [Linear(4, 2, name="head")(h), Flatten()(seq)])
    data = np.random.default_rng(0).standard_normal((6, 5, 3)).astype(np.float32)
    out_h, out_seq = model(data)
    assert out_h.shape == (1, 6, 2) and out_seq.shape == (6, 20)
    lstm = model.layers[1]
    ref_seq, _ = lstm(data)
    np.testing.assert_allclose(out_seq, ref_seq.reshape(6, 20), rtol=1e-6)
    model.zero_grad()
    model(data)
    grad_x = model.backward([np.ones_like(out_h), np.zeros_like(out_seq)])
    assert grad_x.shape == data.shape and np.abs(lstm.weight_hh_l0.grad).sum() > 0
    assert c.shape == (1, None, 4)
