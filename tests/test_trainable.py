"""Issue 14 item 4 (Keras's ``layer.trainable``) and item 7 (assigning an array to a parameter)."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import ConfigError, Input, Model, Parameter, Sequential
from framework.layers import BatchNorm, Linear


def _data(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32)


def test_item4_layer_trainable_false_freezes_its_parameters_in_fit() -> None:
    x, y = _data()
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 2)])
    model.layers[0].trainable = False
    model.compile(optimizer="sgd", loss="mse")
    before = [p.data.copy() for p in model.layers[0].parameters()]
    other = model.layers[1].weight.data.copy()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    for p, b in zip(model.layers[0].parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    assert not np.array_equal(model.layers[1].weight.data, other)


def test_item4_freezing_after_compile_takes_effect_at_the_next_step() -> None:
    x, y = _data()
    model = Sequential([Linear(4, 8), Linear(8, 2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    model.layers[0].trainable = False  # no compile() since
    frozen = model.layers[0].weight.data.copy()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(model.layers[0].weight.data, frozen)
    model.layers[0].trainable = True
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert not np.array_equal(model.layers[0].weight.data, frozen)


def test_item4_nested_model_and_summary_counts() -> None:
    inner = Sequential([Linear(4, 8), Linear(8, 4)])
    model = Sequential([inner, Linear(4, 2)])
    model.build((None, 4))
    inner.trainable = False
    assert all(not p.trainable for p in inner.parameters())
    assert model.count_params(trainable=True) == 4 * 2 + 2
    assert model.count_params(trainable=False) == inner.count_params()
    text = model.summary(print_fn=lambda line: None)
    assert f"Non-trainable params: {inner.count_params():,}" in text


def test_item4_frozen_before_build_stays_frozen() -> None:
    layer = Linear(output_size=3)
    layer.trainable = False
    layer(np.ones((2, 5), dtype=np.float32))
    assert [p.trainable for p in layer.parameters()] == [False, False]


def test_item4_trainable_is_saved_and_restored(tmp_path) -> None:
    pytest.importorskip("h5py")
    x = Input((4,))
    first = Linear(4, 3, name="first")
    model = Model(x, Linear(3, 2, name="second")(first(x)))
    first.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    model.save(tmp_path / "m.h5")
    restored = framework.load_model(tmp_path / "m.h5")
    assert restored.get_layer("first").trainable is False
    assert [p.trainable for p in restored.get_layer("first").parameters()] == [False, False]
    assert restored.get_layer("second").trainable is True
    assert restored.count_params(trainable=False) == model.count_params(trainable=False)


def test_item4_frozen_batchnorm_runs_in_inference_mode() -> None:
    bn = BatchNorm(3)
    x = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32) * 5 + 2
    bn(x)  # build
    bn.trainable = False
    mean = bn.running_mean.data.copy()
    out = bn(x, training=True)
    np.testing.assert_array_equal(bn.running_mean.data, mean)  # statistics untouched
    expected = (x - mean) / np.sqrt(bn.running_var.data + bn.eps) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_item4_trainable_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="trainable must be True or False"):
        Linear(2, 2).trainable = "no"  # type: ignore[assignment]


def test_item7_assigning_an_array_to_a_parameter_is_refused_with_the_way_out() -> None:
    layer = Linear(3, 2)
    with pytest.raises(ConfigError, match=r"weight is a Parameter.*layer.weight.data\[...\] = array"):
        layer.weight = np.zeros((2, 3), dtype=np.float32)
    assert isinstance(layer.weight, Parameter)
    layer.weight.data[...] = 1.0  # the documented way
    layer.weight = Parameter(np.full((2, 3), 2.0, dtype=np.float32))  # or a new Parameter
    assert float(layer.weight.data[0, 0]) == 2.0


def test_keras_weight_lists_and_set_weights() -> None:
    bn = BatchNorm(3)
    bn.build((None, 3))
    weights = bn.get_weights()  # gamma, beta, then the running statistics (Keras's order)
    assert [w.shape for w in weights] == [(3,)] * 4
    weights[0][...] = 7.0
    assert float(bn.weight.data[0]) == 1.0  # copies, not the arrays themselves
    lin = Linear(3, 2)
    lin.set_weights([np.ones((2, 3)), np.zeros(2)])
    np.testing.assert_array_equal(lin.weight.data, np.ones((2, 3), dtype=np.float32))
    assert lin.trainable_weights == [lin.weight, lin.bias]
    lin.trainable = False
    assert lin.trainable_weights == [] and lin.non_trainable_weights == [lin.weight, lin.bias]
    with pytest.raises(framework.ShapeError, match=r"weight expected shape \(2, 3\), got \(3, 2\)"):
        lin.set_weights([np.ones((3, 2)), np.zeros(2)])
    with pytest.raises(framework.ShapeError, match="expected 2 arrays"):
        lin.set_weights([np.ones((2, 3))])
