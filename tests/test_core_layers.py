"""Tests of plugins/core.py: Linear, Identity, Dropout, Flatten and Activation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import framework
from framework import initializers, layers
from framework.errors import ConfigError, ShapeError
from framework.testing import check_gradients

Linear = layers.Linear
Identity = layers.Identity
Dropout = layers.Dropout
Flatten = layers.Flatten
Activation = layers.Activation


def _round_trip(layer):
    """Rebuild ``layer`` from its JSON-serialised config, by class and by registered name."""
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    assert clone.get_config() == layer.get_config()
    by_name = layers.get({"class_name": type(layer).__name__, "config": config})
    assert type(by_name) is type(layer) and by_name.get_config() == layer.get_config()
    return clone


def _away_from_zero(rng, shape, low=0.1):
    """Random values with |x| >= low, so kinks at 0 stay out of finite differences."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, 1.5, size=shape)


# -- Linear ----------------------------------------------------------------------------


def test_linear_pytorch_layout_and_forward_formula(rng):
    layer = Linear(5, 3)
    assert layer.weight.shape == (3, 5) and layer.bias.shape == (3,)
    layer.bias.data[...] = rng.normal(size=3)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (4, 3)
    np.testing.assert_allclose(y, x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(float64, rng, shape, bias):
    layer = Linear(5, 3, bias=bias)
    if bias:
        layer.bias.data[...] = rng.normal(size=3)
    report = check_gradients(layer, rng.normal(size=shape))
    assert set(report.errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
def test_linear_gradients_with_activation(float64, rng, shape):
    layer = Linear(5, 3, activation="tanh")
    layer.bias.data[...] = rng.normal(size=3)
    check_gradients(layer, rng.normal(size=shape))


def test_linear_parameter_gradients_closed_form(float64, rng):
    layer = Linear(4, 2)
    x = rng.normal(size=(2, 3, 4))
    g = rng.normal(size=(2, 3, 2))
    layer(x)
    gx = layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, np.einsum("nto,nti->oi", g, x))
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=(0, 1)))
    np.testing.assert_allclose(gx, g @ layer.weight.data)


def test_linear_without_bias_leaves_bias_none(rng):
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer.count_params() == 6
    x = rng.normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x), x @ layer.weight.data.T, rtol=1e-6)
    assert layer.get_config()["bias"] is False


def test_linear_infers_input_size_on_first_call(rng):
    layer = Linear(output_size=4)
    assert layer.weight is None and layer.input_size is None and not layer.built
    assert layer.parameters() == []
    y = layer(rng.normal(size=(3, 7)).astype(np.float32))
    assert y.shape == (3, 4)
    assert layer.input_size == 7 and layer.weight.shape == (4, 7)
    assert layer.get_config()["input_size"] == 7
    with pytest.raises(ShapeError, match=r"\(N, \*, 7\)"):
        layer(rng.normal(size=(3, 6)).astype(np.float32))


def test_linear_accepts_any_leading_axes_after_build(rng):
    layer = Linear(3, 2)
    assert layer(np.ones((2, 3), dtype=np.float32)).shape == (2, 2)
    assert layer(np.ones((4, 5, 3), dtype=np.float32)).shape == (4, 5, 2)


def test_linear_output_shape():
    layer = Linear(6, 2)
    assert layer.output_shape((None, 6)) == (None, 2)
    assert layer.output_shape((None, 10, 6)) == (None, 10, 2)
    with pytest.raises(ShapeError, match=r"\(N, \*, 6\).*\(None, 5\)"):
        layer.output_shape((None, 5))
    assert Linear(output_size=3).output_shape((None, 8, 9)) == (None, 8, 3)


def test_linear_shape_error_names_layer_expected_and_actual(rng):
    layer = Linear(3, 2, name="fc1")
    with pytest.raises(ShapeError) as info:
        layer(rng.normal(size=(4, 5)))
    message = str(info.value)
    assert "Linear layer 'fc1'" in message and "(N, *, 3)" in message and "(4, 5)" in message
    with pytest.raises(ShapeError, match="fc1"):
        layer(rng.normal(size=(3,)))


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"input_size": 3, "output_size": 0}, "output_size"),
        ({"input_size": 3, "output_size": -4}, "output_size"),
        ({"input_size": 3, "output_size": 2.0}, "output_size"),
        ({"input_size": 3}, "output_size"),
        ({"input_size": 0, "output_size": 3}, "input_size"),
        ({"input_size": True, "output_size": 3}, "input_size"),
    ],
)
def test_linear_invalid_sizes_are_config_errors(kwargs, arg):
    with pytest.raises(ConfigError, match=arg):
        Linear(**kwargs)


def test_linear_unknown_activation_lists_registered_names():
    with pytest.raises(ConfigError) as info:
        Linear(3, 2, activation="no_such_activation")
    message = str(info.value).lower()
    assert "no_such_activation" in message
    assert all(name.lower() in message for name in framework.activations.names())


def test_linear_unknown_initializer_lists_registered_names():
    with pytest.raises(ConfigError) as info:
        Linear(3, 2, weight_init="no_such_init")
    message = str(info.value).lower()
    assert "no_such_init" in message
    assert all(name.lower() in message for name in initializers.names())
    with pytest.raises(ConfigError, match="no_such_bias_init"):
        Linear(3, 2, bias_init="no_such_bias_init")


@pytest.mark.parametrize("kwargs", [{"activation": 5}, {"weight_init": 5}, {"bias_init": [0.0]}])
def test_linear_refuses_objects_that_are_not_activations_or_initializers(kwargs):
    with pytest.raises(ConfigError, match="Linear"):
        Linear(3, 2, **kwargs)


def test_linear_initializers_by_name_class_and_instance():
    Constant = initializers.Constant
    by_name = Linear(3, 2, weight_init="ones", bias_init=initializers.get("constant", value=0.5))
    np.testing.assert_array_equal(by_name.weight.data, np.ones((2, 3)))
    np.testing.assert_array_equal(by_name.bias.data, np.full(2, 0.5))
    by_class = Linear(3, 2, weight_init=initializers.Zeros, bias_init=Constant(2.0))
    assert not by_class.weight.data.any()
    np.testing.assert_array_equal(by_class.bias.data, np.full(2, 2.0))
    assert by_class.weight.dtype == np.float32


def test_linear_default_init_is_kaiming_uniform_with_activation_gain():
    framework.set_seed(0)
    fan_in = 400
    plain = Linear(fan_in, 300)
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)  # default gain of kaiming_uniform: sqrt(2)
    w = plain.weight.data
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound
    assert not plain.bias.data.any()
    tanh = Linear(fan_in, 300, activation="tanh")
    gain = getattr(tanh.activation, "gain", None)
    assert gain is not None
    assert np.abs(tanh.weight.data).max() == pytest.approx(gain * math.sqrt(3.0 / fan_in), rel=0.01)


def test_linear_weights_reproducible_with_set_seed():
    framework.set_seed(42)
    a = Linear(6, 4).weight.data.copy()
    framework.set_seed(42)
    b = Linear(6, 4).weight.data.copy()
    framework.set_seed(43)
    c = Linear(6, 4).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_linear_config_round_trip():
    layer = Linear(5, 3, activation="tanh", bias=False, weight_init="xavier_normal", name="fc")
    clone = _round_trip(layer)
    assert clone.weight.shape == (3, 5) and clone.bias is None
    assert type(clone.activation) is type(layer.activation)
    assert type(clone.weight_init) is type(layer.weight_init)
    assert _round_trip(Linear(output_size=2)).get_config()["input_size"] is None


def test_dense_alias_is_linear():
    assert layers.Dense is Linear


# -- Dropout ---------------------------------------------------------------------------


def test_dropout_is_identity_in_eval(rng):
    layer = Dropout(0.5).eval()
    x = rng.normal(size=(8, 10)).astype(np.float32)
    y = layer(x)
    np.testing.assert_array_equal(y, x)
    g = rng.normal(size=(8, 10)).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_training_scales_kept_units_and_masks_gradient(rng, p):
    layer = Dropout(p, seed=0)
    x = rng.uniform(0.5, 2.0, (50, 40)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert kept.any() and not kept.all()
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    g = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(g), g * kept / (1 - p), rtol=1e-6)


def test_dropout_p_zero_is_identity_in_training(rng):
    layer = Dropout(0.0)
    assert layer.training
    x = rng.normal(size=(5, 6))
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_fraction_of_zeros_is_p():
    p = 0.3
    y = Dropout(p, seed=1)(np.ones((1000, 1000), dtype=np.float32))
    # Standard deviation of the fraction is sqrt(p(1-p)/n) ~ 4.6e-4: 0.005 is >10 sigma.
    assert abs(np.mean(y == 0) - p) < 0.005


def test_dropout_high_p_preserves_the_mean():
    x = np.ones((1000, 1000), dtype=np.float32)
    y = Dropout(0.99, seed=2)(x)
    # About 10 000 kept units: the relative standard deviation of the mean is ~1%.
    assert y.mean() == pytest.approx(x.mean(), rel=0.05)
    assert set(np.unique(y)) <= {0.0, np.float32(100.0)}


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "a", None, True])
def test_dropout_invalid_p_is_config_error(p):
    with pytest.raises(ConfigError, match=r"Dropout.*p"):
        Dropout(p)


def test_dropout_accepts_numpy_scalars():
    assert Dropout(np.float32(0.25)).p == 0.25
    assert Dropout(np.int64(0)).p == 0.0


def test_dropout_mask_reproducible_with_seed_argument():
    x = np.ones((20, 20))
    a = Dropout(0.5, seed=7)(x)
    b = Dropout(0.5, seed=7)(x)
    c = Dropout(0.5, seed=8)(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_mask_reproducible_with_set_seed():
    x = np.ones((20, 20))
    framework.set_seed(11)
    a = Dropout(0.5)(x)
    framework.set_seed(11)
    b = Dropout(0.5)(x)
    np.testing.assert_array_equal(a, b)
    layer = Dropout(0.5)
    assert not np.array_equal(layer(x), layer(x)), "each call draws a new mask"


def test_dropout_gradient_in_eval(float64, rng):
    check_gradients(Dropout(0.5).eval(), rng.normal(size=(3, 4)))


def test_dropout_config_round_trip():
    assert _round_trip(Dropout(0.25)).get_config() == {"p": 0.25}
    clone = _round_trip(Dropout(0.1, seed=3, name="drop"))
    assert clone.seed == 3 and clone.name == "drop"


# -- Flatten ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_dim", "end_dim", "expected"),
    [
        (1, -1, (2, 60)),
        (2, -1, (2, 3, 20)),
        (1, 2, (2, 12, 5)),
        (-2, -1, (2, 3, 20)),
        (2, 2, (2, 3, 4, 5)),
        (1, -2, (2, 12, 5)),
    ],
)
def test_flatten_shapes(rng, start_dim, end_dim, expected):
    layer = Flatten(start_dim, end_dim)
    x = rng.normal(size=(2, 3, 4, 5))
    y = layer(x)
    assert y.shape == expected
    np.testing.assert_array_equal(y.ravel(), x.ravel())
    assert layer.output_shape((None, 3, 4, 5)) == (None, *expected[1:])
    g = rng.normal(size=expected)
    gx = layer.backward(g)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx, g.reshape(x.shape))


def test_flatten_output_shape_with_unknown_size():
    assert Flatten().output_shape((None, 3, None)) == (None, None)


def test_flatten_gradients(float64, rng):
    check_gradients(Flatten(), rng.normal(size=(2, 3, 2, 2)))


def test_flatten_errors(rng):
    with pytest.raises(ConfigError, match="start_dim"):
        Flatten(start_dim=0)
    with pytest.raises(ConfigError, match="integers"):
        Flatten(start_dim=1.5)
    with pytest.raises(ShapeError, match="Flatten"):
        Flatten(start_dim=3)(rng.normal(size=(2, 3, 4)))
    with pytest.raises(ShapeError, match="Flatten"):
        Flatten(start_dim=2, end_dim=1)(rng.normal(size=(2, 3, 4)))


def test_flatten_config_round_trip():
    assert _round_trip(Flatten(2, -2)).get_config() == {"start_dim": 2, "end_dim": -2}


# -- Identity and Activation --------------------------------------------------------------


def test_identity_returns_input_and_passes_gradient(float64, rng):
    layer = Identity()
    x = rng.normal(size=(3, 4))
    assert layer(x) is x
    g = rng.normal(size=(3, 4))
    assert layer.backward(g) is g
    check_gradients(Identity(), rng.normal(size=(2, 3, 2)))
    assert _round_trip(Identity(name="id")).name == "id"


def test_activation_relu_forward_and_gradient(float64, rng):
    layer = Activation("relu")
    x = _away_from_zero(rng, (4, 5))
    np.testing.assert_array_equal(layer(x), np.maximum(x, 0))
    check_gradients(layer, x)


def test_activation_tanh_gradient_any_shape(float64, rng):
    layer = Activation("tanh")
    check_gradients(layer, rng.normal(size=(2, 3, 4)))
    assert layer(rng.normal(size=(5, 2))).shape == (5, 2), "Activation accepts any shape"


def test_activation_errors():
    with pytest.raises(ConfigError, match="activation"):
        Activation(None)
    with pytest.raises(ConfigError, match="no_such_activation"):
        Activation("no_such_activation")
    with pytest.raises(ConfigError, match="Activation"):
        Activation(3.0)


def test_activation_config_round_trip():
    clone = _round_trip(Activation("relu", name="act"))
    assert clone.name == "act"
    assert type(clone.activation) is type(Activation("relu").activation)
