"""Tests of plugins/normalization.py: BatchNorm and LayerNorm."""

from __future__ import annotations

import json

import numpy as np
import pytest

import framework
from framework import layers
from framework.base.parameter import Buffer
from framework.errors import ConfigError, FrameworkError, ShapeError
from framework.testing import check_gradients

BatchNorm = layers.BatchNorm
LayerNorm = layers.LayerNorm


def _randomise_affine(layer, rng):
    """Give gamma/beta non-trivial values so their role in the gradient is exercised."""
    layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
    layer.bias.data[...] = rng.normal(size=layer.bias.shape)


def _channel_axes(x):
    return (0, *range(2, x.ndim))


def _bcast(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# -- BatchNorm: registration and forward maths -------------------------------


def test_batchnorm_aliases_resolve_to_one_class():
    assert layers.BatchNorm1d is BatchNorm
    assert layers.BatchNorm2d is BatchNorm
    assert type(layers.get("batch_norm_2d", num_features=3)) is BatchNorm


@pytest.mark.parametrize("shape", [(16, 3), (8, 3, 5), (4, 3, 4, 5)])
def test_batchnorm_training_output_matches_formula(shape, rng):
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    layer = BatchNorm(3)
    _randomise_affine(layer, rng)
    y = layer(x)
    axes = _channel_axes(x)
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    var = x64.var(axis=axes, keepdims=True)
    expected = (x64 - mu) / np.sqrt(var + 1e-5) * _bcast(layer.weight.data, x.ndim) + _bcast(
        layer.bias.data, x.ndim
    )
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_batchnorm_without_affine_has_zero_mean_unit_variance(rng):
    x = rng.normal(-1.0, 4.0, (32, 5, 3, 3))
    layer = BatchNorm(5, affine=False)
    assert layer.weight is None and layer.bias is None
    y = layer(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)


def test_batchnorm_float32_stays_float32(rng):
    layer = BatchNorm(4)
    x = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32
    assert layer.running_mean.dtype == np.float32 and layer.running_var.dtype == np.float32
    assert layer.weight.grad.dtype == np.float32


# -- BatchNorm: gradients -----------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 2, 3, 4)])
def test_batchnorm_gradients_training_mode(float64, rng, shape):
    layer = BatchNorm(shape[1])
    _randomise_affine(layer, rng)
    layer.train()
    check_gradients(layer, rng.normal(1.0, 2.0, shape))


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 4)])
def test_batchnorm_gradients_eval_mode(float64, rng, shape):
    layer = BatchNorm(shape[1])
    _randomise_affine(layer, rng)
    layer.running_mean.data[...] = rng.normal(size=shape[1])
    layer.running_var.data[...] = rng.uniform(0.5, 2.0, shape[1])
    layer.eval()
    check_gradients(layer, rng.normal(size=shape))


def test_batchnorm_gradients_without_affine(float64, rng):
    layer = BatchNorm(3, affine=False)
    check_gradients(layer, rng.normal(size=(5, 3, 2, 2)))


def test_batchnorm_gradients_without_running_stats_in_eval(float64, rng):
    layer = BatchNorm(3, track_running_stats=False).eval()
    _randomise_affine(layer, rng)
    check_gradients(layer, rng.normal(size=(5, 3, 4)))


def test_batchnorm_parameter_gradients_match_closed_form(float64, rng):
    x = rng.normal(size=(7, 3, 2, 2))
    g = rng.normal(size=x.shape)
    layer = BatchNorm(3)
    layer(x)
    layer.backward(g)
    xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(layer.weight.grad, (g * xhat).sum(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=(0, 2, 3)), rtol=1e-10)


# -- BatchNorm: running statistics and modes ---------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.3, 0.0, 1.0])
def test_running_stats_follow_momentum_rule_with_unbiased_variance(float64, rng, momentum):
    layer = BatchNorm(3, momentum=momentum)
    expected_mean = np.zeros(3)
    expected_var = np.ones(3)
    for step in range(4):
        x = rng.normal(step, 1.0 + step, size=(5, 3, 2, 3))
        layer(x)
        batch_mean = x.mean(axis=(0, 2, 3))
        batch_var_unbiased = x.var(axis=(0, 2, 3), ddof=1)
        expected_mean = (1 - momentum) * expected_mean + momentum * batch_mean
        expected_var = (1 - momentum) * expected_var + momentum * batch_var_unbiased
        np.testing.assert_allclose(layer.running_mean.data, expected_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.running_var.data, expected_var, rtol=1e-12, atol=1e-14)
    assert layer.num_batches_tracked == 4


def test_running_var_uses_unbiased_not_biased_variance(float64):
    layer = BatchNorm(1, momentum=1.0)
    x = np.array([[0.0], [2.0]])  # biased variance 1, unbiased 2
    layer(x)
    assert layer.running_var.data[0] == pytest.approx(2.0)
    assert layer.running_mean.data[0] == pytest.approx(1.0)


def test_eval_output_uses_running_stats(rng):
    layer = BatchNorm(4, eps=1e-3)
    _randomise_affine(layer, rng)
    for _ in range(3):
        layer(rng.normal(3.0, 2.0, (10, 4, 3, 3)).astype(np.float32))
    rm = layer.running_mean.data.copy()
    rv = layer.running_var.data.copy()
    layer.eval()
    x = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    y = layer(x)
    expected = (x - _bcast(rm, 4)) / np.sqrt(_bcast(rv, 4) + 1e-3) * _bcast(layer.weight.data, 4) + _bcast(
        layer.bias.data, 4
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # Eval never touches the running statistics.
    np.testing.assert_array_equal(layer.running_mean.data, rm)
    np.testing.assert_array_equal(layer.running_var.data, rv)
    assert layer.num_batches_tracked == 3


def test_eval_accepts_a_single_sample(rng):
    layer = BatchNorm(3).eval()
    x = rng.normal(size=(1, 3))
    np.testing.assert_allclose(layer(x), x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_train_eval_switch_changes_behaviour(rng):
    layer = BatchNorm(2)
    x = rng.normal(5.0, 2.0, (8, 2)).astype(np.float32)
    y_train = layer(x)
    assert layer.training
    layer.eval()
    assert not layer.training
    y_eval = layer(x)
    assert not np.allclose(y_train, y_eval)
    layer.train()
    np.testing.assert_allclose(layer(x), y_train, rtol=1e-6)


def test_without_running_stats_eval_uses_batch_statistics(rng):
    layer = BatchNorm(3, track_running_stats=False)
    assert layer.running_mean is None and layer.running_var is None
    x = rng.normal(4.0, 2.0, (9, 3))
    y_train = layer(x)
    y_eval = layer.eval()(x)
    np.testing.assert_allclose(y_eval, y_train)
    assert list(layer.named_buffers()) == []


def test_accepts_other_batch_and_spatial_sizes_after_build(rng):
    layer = BatchNorm(3)
    assert layer(rng.normal(size=(4, 3, 5, 5))).shape == (4, 3, 5, 5)
    assert layer(rng.normal(size=(2, 3, 7, 6))).shape == (2, 3, 7, 6)
    assert layer.output_shape((None, 3, 7, 6)) == (None, 3, 7, 6)


# -- BatchNorm: state ----------------------------------------------------------


def test_buffers_in_state_dict_and_count_as_non_trainable():
    layer = BatchNorm(5)
    buffers = dict(layer.named_buffers())
    assert set(buffers) == {"running_mean", "running_var"}
    assert all(isinstance(b, Buffer) for b in buffers.values())
    np.testing.assert_array_equal(buffers["running_mean"].data, np.zeros(5))
    np.testing.assert_array_equal(buffers["running_var"].data, np.ones(5))
    assert {name for name, _ in layer.named_parameters()} == {"weight", "bias"}
    assert set(layer.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert layer.count_params(trainable=True) == 10
    assert layer.count_params(trainable=False) == 10
    assert layer.count_params() == 20


def test_state_dict_round_trip_restores_running_stats(rng):
    source = BatchNorm(3)
    _randomise_affine(source, rng)
    source(rng.normal(2.0, 3.0, (6, 3, 2, 2)).astype(np.float32))
    target = BatchNorm(3)
    target.load_state_dict({k: v.copy() for k, v in source.state_dict().items()})
    x = rng.normal(size=(2, 3, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(target.eval()(x), source.eval()(x))


def test_zero_grad_and_accumulation(rng):
    layer = BatchNorm(2)
    x = rng.normal(size=(4, 2)).astype(np.float32)
    g = rng.normal(size=(4, 2)).astype(np.float32)
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-6)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_batchnorm_config_round_trip():
    layer = BatchNorm(7, eps=1e-3, momentum=0.01, affine=False, track_running_stats=False, name="bn")
    config = json.loads(json.dumps(layer.get_config()))
    assert config == {
        "name": "bn",
        "num_features": 7,
        "eps": 1e-3,
        "momentum": 0.01,
        "affine": False,
        "track_running_stats": False,
    }
    clone = BatchNorm.from_config(config)
    assert clone.get_config() == layer.get_config()
    rebuilt = layers.get({"class_name": "BatchNorm2d", "config": config})
    assert type(rebuilt) is BatchNorm and rebuilt.get_config() == config


# -- BatchNorm: errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"num_features": 0}, "num_features"),
        ({"num_features": -2}, "num_features"),
        ({"num_features": 2.5}, "num_features"),
        ({"num_features": True}, "num_features"),
        ({"num_features": 3, "eps": 0}, "eps"),
        ({"num_features": 3, "eps": -1e-5}, "eps"),
        ({"num_features": 3, "momentum": -0.1}, "momentum"),
        ({"num_features": 3, "momentum": 1.5}, "momentum"),
        ({"num_features": 3, "momentum": "fast"}, "momentum"),
    ],
)
def test_batchnorm_invalid_config(kwargs, arg):
    with pytest.raises(ConfigError, match=arg) as info:
        BatchNorm(**kwargs)
    assert "BatchNorm" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("GroupNorm", {"num_groups": 2, "num_channels": 4, "eps": 0.0}, "eps"),
        ("GroupNorm", {"num_groups": 2, "num_channels": 4, "eps": float("inf")}, "eps"),
        ("InstanceNorm2d", {"num_features": 3, "eps": True}, "eps"),
        ("InstanceNorm2d", {"num_features": 3, "momentum": 1.5}, "momentum"),
        ("InstanceNorm1d", {"num_features": 3, "momentum": "fast"}, "momentum"),
        ("RMSNorm", {"normalized_shape": 4, "eps": -1e-6}, "eps"),
        ("LayerNorm", {"normalized_shape": 4, "eps": float("nan")}, "eps"),
    ],
)
def test_other_norms_refuse_bad_eps_and_momentum(name, kwargs, arg):
    with pytest.raises(ConfigError, match=arg) as info:
        layers.get(name, **kwargs)
    assert name in str(info.value)


def test_norms_take_numpy_scalars_for_eps_and_momentum():
    layer = layers.get("InstanceNorm2d", num_features=3, eps=np.float32(1e-3), momentum=np.float64(0.2))
    assert layer.eps == pytest.approx(1e-3) and layer.momentum == 0.2


def test_batchnorm_channel_mismatch_names_layer_and_shapes(rng):
    layer = BatchNorm(3, name="bn1")
    with pytest.raises(ShapeError) as info:
        layer(rng.normal(size=(4, 5, 2, 2)))
    message = str(info.value)
    assert "bn1" in message and "(N, 3, *)" in message and "5, 2, 2" in message
    layer(rng.normal(size=(4, 3, 2, 2)))
    with pytest.raises(ShapeError, match=r"\(N, 3, \*\).*\(4, 4\)"):
        layer(rng.normal(size=(4, 4)))


def test_output_shape_checks_the_channel_axis():
    assert BatchNorm(3).output_shape((None, 3)) == (None, 3)
    with pytest.raises(ShapeError, match=r"\(N, 3, \*\).*\(None, 4, 8\)"):
        BatchNorm(3).output_shape((None, 4, 8))
    assert LayerNorm((2, 3)).output_shape((None, 5, 2, 3)) == (None, 5, 2, 3)
    with pytest.raises(ShapeError, match="LayerNorm"):
        LayerNorm((2, 3)).output_shape((None, 3, 2))


def test_batchnorm_rank_one_input_is_refused(rng):
    with pytest.raises(ShapeError, match="BatchNorm"):
        BatchNorm(3)(rng.normal(size=(3,)))


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_batchnorm_refuses_single_value_per_channel_in_training(rng, shape):
    layer = BatchNorm(3)
    with pytest.raises(FrameworkError, match="more than 1 value per channel"):
        layer(rng.normal(size=shape))
    # The failed batch did not corrupt the running statistics.
    np.testing.assert_array_equal(layer.running_mean.data, np.zeros(3))


# -- LayerNorm ---------------------------------------------------------------------


def _layer_norm_reference(x, k, weight, bias, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@pytest.mark.parametrize(
    ("shape", "normalized_shape"),
    [((6, 5), 5), ((3, 4, 5), (5,)), ((2, 3, 3, 4), (3, 4)), ((2, 2, 3, 2), [2, 3, 2])],
)
def test_layernorm_output_matches_formula(rng, shape, normalized_shape):
    layer = LayerNorm(normalized_shape)
    _randomise_affine(layer, rng)
    x = rng.normal(1.0, 2.0, shape).astype(np.float32)
    y = layer(x)
    k = len(layer.normalized_shape)
    assert layer.weight.shape == tuple(shape[-k:])
    expected = _layer_norm_reference(x.astype(np.float64), k, layer.weight.data, layer.bias.data)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "normalized_shape"),
    [((4, 5), 5), ((2, 3, 4), 4), ((2, 3, 2, 3), (2, 3))],
)
def test_layernorm_gradients(float64, rng, shape, normalized_shape):
    layer = LayerNorm(normalized_shape)
    _randomise_affine(layer, rng)
    check_gradients(layer, rng.normal(size=shape))


def test_layernorm_gradients_without_affine_or_bias(float64, rng):
    plain = LayerNorm(4, elementwise_affine=False)
    assert plain.weight is None and plain.bias is None
    check_gradients(plain, rng.normal(size=(3, 2, 4)))
    no_bias = LayerNorm((2, 4), bias=False)
    assert no_bias.bias is None
    no_bias.weight.data[...] = rng.uniform(0.5, 1.5, (2, 4))
    check_gradients(no_bias, rng.normal(size=(3, 2, 4)))


def test_layernorm_same_in_train_and_eval(rng):
    layer = LayerNorm(6)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer.train()(x), layer.eval()(x))
    assert list(layer.named_buffers()) == []
    assert layer.count_params() == 12


def test_layernorm_accepts_other_leading_shapes(rng):
    layer = LayerNorm(4)
    assert layer(rng.normal(size=(2, 4))).shape == (2, 4)
    assert layer(rng.normal(size=(3, 5, 4))).shape == (3, 5, 4)


def test_layernorm_shape_errors(rng):
    layer = LayerNorm((3, 4), name="ln")
    with pytest.raises(ShapeError) as info:
        layer(rng.normal(size=(2, 4, 3)))
    message = str(info.value)
    assert "ln" in message and "(N, *, 3, 4)" in message and "(None, 4, 3)" in message
    with pytest.raises(ShapeError, match="LayerNorm"):
        LayerNorm((3, 4))(rng.normal(size=(3, 4)))  # no batch axis


@pytest.mark.parametrize(
    "kwargs",
    [
        {"normalized_shape": 0},
        {"normalized_shape": ()},
        {"normalized_shape": (3, -1)},
        {"normalized_shape": "4"},
        {"normalized_shape": 4, "eps": 0.0},
    ],
)
def test_layernorm_invalid_config(kwargs):
    with pytest.raises(ConfigError, match="LayerNorm"):
        LayerNorm(**kwargs)


def test_layernorm_config_round_trip():
    layer = LayerNorm((3, 4), eps=1e-6, elementwise_affine=True, bias=False, name="ln")
    config = json.loads(json.dumps(layer.get_config()))
    clone = LayerNorm.from_config(config)
    assert clone.get_config() == layer.get_config()
    assert clone.normalized_shape == (3, 4) and clone.bias is None
    assert type(layers.get({"class_name": "LayerNorm", "config": config})) is LayerNorm


def test_float64_fixture_builds_float64_parameters(float64):
    assert framework.get_default_dtype() == np.float64
    assert BatchNorm(2).running_var.dtype == np.float64
    assert LayerNorm(2).weight.dtype == np.float64


# -- the per-call context (issue 15) --------------------------------------------


@pytest.mark.parametrize(
    "make, shapes, training",
    [
        (lambda: layers.BatchNorm(3), ((4, 3, 5, 2), (6, 3, 3, 3)), True),
        (lambda: layers.BatchNorm(3, affine=False), ((5, 3), (7, 3)), True),
        (lambda: layers.BatchNorm(3), ((4, 3, 5), (2, 3, 6)), False),
        (lambda: layers.LayerNorm((3, 4)), ((2, 3, 4), (5, 3, 4)), True),
        (lambda: layers.LayerNorm(4, bias=False), ((2, 5, 4), (3, 4)), True),
    ],
    ids=["batchnorm-train", "batchnorm-no-affine", "batchnorm-eval", "layernorm", "layernorm-no-bias"],
)
def test_two_calls_keep_separate_records_and_sum_gradients(float64, rng, make, shapes, training):
    from test_conv import assert_calls_are_independent

    layer = make()
    x1, x2 = rng.normal(1.0, 2.0, shapes[0]), rng.normal(-1.0, 0.5, shapes[1])
    assert_calls_are_independent(layer, x1, x2, rng, training=training)


@pytest.mark.parametrize(
    "layer, shape",
    [(layers.BatchNorm(3), (4, 3, 2, 2)), (layers.LayerNorm(4), (2, 3, 4))],
    ids=["batchnorm", "layernorm"],
)
def test_inference_call_keeps_no_state_on_the_layer(rng, layer, shape):
    from test_conv import assert_inference_keeps_no_state

    assert_inference_keeps_no_state(layer, rng.standard_normal(shape))


def test_a_frozen_batchnorm_runs_in_inference_mode(float64, rng):
    # Keras's fine-tuning rule: trainable=False makes BatchNorm use (and keep) its running statistics.
    from framework.base.context import Context

    frozen, reference = layers.BatchNorm(3), layers.BatchNorm(3)
    for layer in (frozen, reference):
        layer.running_mean.data[...] = [0.5, -1.0, 2.0]
        layer.running_var.data[...] = [4.0, 0.25, 1.0]
        layer.weight.data[...] = [1.5, -0.5, 2.0]
    frozen.trainable = False  # the Layer.trainable property where it exists, else a plain attribute
    x = rng.normal(0.0, 3.0, (6, 3, 2, 2))
    g = rng.standard_normal(x.shape)
    ctx, ref_ctx = Context(True), Context(False)
    np.testing.assert_allclose(frozen.forward(ctx, x), reference.forward(ref_ctx, x), rtol=1e-12)
    np.testing.assert_allclose(frozen.backward(ctx, g), reference.backward(ref_ctx, g), rtol=1e-12)
    np.testing.assert_array_equal(frozen.running_mean.data, [0.5, -1.0, 2.0])
    np.testing.assert_array_equal(frozen.running_var.data, [4.0, 0.25, 1.0])
    assert frozen.num_batches_tracked == 0
    # unfrozen, the same training call normalises with the batch statistics and updates the estimates
    frozen.trainable = True
    y = frozen.forward(Context(True), x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), frozen.bias.data, atol=1e-12)
    assert frozen.num_batches_tracked == 1


def test_layernorm_float16_statistics_do_not_overflow():
    """float16 rows whose sum passes 65504: the statistics are taken in float32 (a float16 sum gave inf)."""
    import framework

    previous = framework.get_default_dtype()
    framework.set_default_dtype("float16")
    try:
        layer = LayerNorm(512)
        rng = np.random.default_rng(0)
        x = (300 + 3 * rng.standard_normal((4, 512))).astype(np.float16)
        y = layer(x)
        g = rng.standard_normal(y.shape).astype(np.float16)
        dx = layer.backward(g)
    finally:
        framework.set_default_dtype(previous)
    assert y.dtype == dx.dtype == np.float16
    x64 = x.astype(np.float64)
    xhat = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, xhat, atol=1e-2)
    g64 = g.astype(np.float64)
    r = 1 / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    expected = r * (g64 - g64.mean(-1, keepdims=True) - xhat * (g64 * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(dx, expected, atol=2e-3 * np.abs(expected).max())
