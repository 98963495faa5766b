"""Sequential: building, naming, shape checks, summary, (de)serialisation, compile config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import Input, Sequential
from framework.errors import NotBuiltError, ShapeError
from framework.layers import BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from framework.models.model import deserialize_model, serialize_model


def cnn() -> Sequential:
    return Sequential(
        [
            Input((1, 8, 8)),
            Conv2d(1, 4, 3, padding=1, activation="relu"),
            BatchNorm(4),
            MaxPool2d(2),
            Flatten(),
            Dropout(0.25),
            Linear(64, 10),
        ]
    )


def test_names_are_unique_deterministic_and_used_in_state_dict():
    a, b = cnn(), cnn()
    expected = ["conv2d", "batch_norm", "max_pool2d", "flatten", "dropout", "linear"]
    assert [n for n, _ in a.named_children()] == expected
    assert [n for n, _ in b.named_children()] == expected
    assert list(a.state_dict()) == list(b.state_dict())
    assert "conv2d.weight" in a.state_dict() and "batch_norm.running_mean" in dict(a.named_buffers())
    model = Sequential([Linear(2, 2), Linear(2, 2, name="head"), Linear(2, 2)])
    assert [n for n, _ in model.named_children()] == ["linear", "head", "linear_1"]


def test_add_checks_shapes_naming_both_layers_and_shapes():
    model = Sequential([Linear(784, 128, activation="relu")])
    assert model.built and model.input_shape == (None, 784)
    with pytest.raises(framework.ShapeError) as info:
        model.add(Linear(64, 10))
    message = str(info.value)
    assert "Linear layer 'linear'" in message and "(None, 128)" in message
    assert "Linear layer 'linear_1'" in message and "64" in message
    model.add(Linear(128, 10))
    conv = Sequential([Input((3, 16, 16)), Conv2d(3, 8, 3)])
    with pytest.raises(
        framework.ShapeError, match=r"Conv2d layer 'conv2d' \(output shape \(None, 8, 14, 14\)\)"
    ):
        conv.add(Conv2d(4, 8, 3))


def test_input_shape_from_input_kwarg_and_build():
    by_input = Sequential([Input((5,)), Linear(output_size=3)])
    by_kwarg = Sequential([Linear(output_size=3)], input_shape=(5,))
    assert by_input.built and by_kwarg.built
    assert by_input[0].weight.shape == by_kwarg[0].weight.shape == (3, 5)
    lazy = Sequential([Linear(output_size=3), Linear(output_size=2)])
    assert not lazy.built
    with pytest.raises(NotBuiltError, match="not built"):  # Keras: an unbuilt model has no count yet
        lazy.count_params()
    lazy.build((None, 5))
    assert lazy.layer_output_shapes() == [(None, 3), (None, 2)]
    assert lazy.count_params() == 5 * 3 + 3 + 3 * 2 + 2
    on_first_call = Sequential([Linear(output_size=3)])
    assert on_first_call(np.zeros((2, 7), dtype=np.float32)).shape == (2, 3)
    assert on_first_call.built and on_first_call.input_shape == (None, 7)


def test_indexing_pop_len_iteration():
    model = Sequential([Linear(4, 8), Dropout(0.1), Linear(8, 2)])
    assert len(model) == 3
    assert model[0] is model["linear"] is model.get_layer("linear") is model.layers[0]
    assert isinstance(model[-1], Linear) and model[1:] == model.layers[1:]
    assert [type(layer).__name__ for layer in model] == ["Linear", "Dropout", "Linear"]
    last = model.pop()
    assert last.output_size == 2 and len(model) == 2
    model.add(Linear(8, 5))
    assert model.predict(np.zeros((3, 4))).shape == (3, 5)
    with pytest.raises(framework.ConfigError, match="no layer named 'nope'"):
        model["nope"]
    with pytest.raises(IndexError):
        model[10]
    with pytest.raises(framework.ConfigError, match="already in the model"):
        model.add(model[0])
    with pytest.raises(framework.ConfigError, match="expected a Layer"):
        model.add("linear")
    with pytest.raises(framework.ConfigError, match="no layers"):
        Sequential().pop()


def test_train_and_eval_reach_every_layer():
    model = cnn()
    model.eval()
    assert all(not layer.training for layer in model.layers) and not model.training
    model.train()
    assert all(layer.training for layer in model.layers)


def test_summary_totals_and_output_shapes():
    model = cnn()
    model[5].p = 0.0
    lines: list[str] = []
    text = model.summary(print_fn=lines.append)
    assert text == "\n".join(lines)
    for shape in ("(None, 4, 8, 8)", "(None, 4, 4, 4)", "(None, 64)", "(None, 10)"):
        assert shape in text
    total = model.count_params()
    trainable = model.count_params(trainable=True)
    frozen = model.count_params(trainable=False)
    assert total == trainable + frozen and frozen == 8  # BatchNorm running mean and var
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {trainable:,}" in text
    assert f"Non-trainable params: {frozen:,}" in text
    per_layer = sum(layer.count_params() for layer in model.layers)
    assert per_layer == total


def test_summary_prints_without_print_fn(capsys):
    assert Sequential([Linear(3, 2)]).summary() is None
    assert "Total params: 8" in capsys.readouterr().out


def test_serialize_round_trip_rebuilds_a_built_model(rng):
    framework.set_seed(0)
    model = cnn()
    data = json.loads(json.dumps(serialize_model(model)))
    assert data["class_name"] == "Sequential"
    rebuilt = deserialize_model(data)
    assert isinstance(rebuilt, Sequential) and rebuilt.built
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


def test_lazy_layers_rebuild_from_stored_input_shape():
    model = Sequential([Linear(output_size=4), Linear(output_size=2)])
    model.build((None, 6))
    rebuilt = deserialize_model(json.loads(json.dumps(serialize_model(model))))
    assert rebuilt[0].weight.shape == (4, 6)


def test_unregistered_layer_cannot_be_serialised():
    class Private(framework.Layer):
        def forward(self, x):
            return x

        def backward(self, g):
            return g

    model = Sequential([Linear(2, 2), Private()])
    with pytest.raises(framework.ConfigError, match="not registered"):
        serialize_model(model)


def test_compile_config_round_trip():
    model = Sequential([Linear(3, 2)])
    model.compile(
        framework.optimizers.get("adam", learning_rate=0.005), "cross_entropy", metrics=["accuracy"]
    )
    cfg = json.loads(json.dumps(model.compile_config()))
    other = Sequential([Linear(3, 2)])
    other.compile_from_config(cfg)
    assert type(other.optimizer) is type(model.optimizer)
    assert other.optimizer.lr == pytest.approx(0.005)
    assert type(other.loss) is type(model.loss)
    assert [m.name for m in other.metrics] == ["accuracy"]
    assert other.optimizer.params and len(other.optimizer.params) == 2
    with pytest.raises(framework.NotCompiledError):
        Sequential([Linear(3, 2)]).compile_config()


@requires_h5py
def test_save_and_load_model(tmp_path, rng):
    checkpoint = pytest.importorskip("framework.models.persistence")
    framework.set_seed(1)
    model = Sequential([Linear(3, 8, activation="relu"), Linear(8, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    x = rng.standard_normal((32, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.h5")
    loaded = checkpoint.load_model(tmp_path / "m.h5")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.epoch == model.epoch == 2
    history = loaded.fit(x, y, epochs=3, initial_epoch=loaded.epoch, verbose=0)
    assert history.epoch == [2]


def test_deferred_build_of_a_variable_length_stack_on_the_first_batch():
    """Issue 14: LSTM(output="sequence") -> Flatten -> Linear without an input length builds
    on the first batch, as Keras defers it, then saves and reloads like any built model."""
    from framework.layers import LSTM, Flatten

    model = Sequential([LSTM(3, 4, batch_first=True, output="sequence"), Flatten(), Linear(output_size=2)])
    assert not model.built
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).random((8, 5, 3)).astype(np.float32)
    model.fit(x, np.zeros((8, 2), np.float32), epochs=1, verbose=0)
    assert model.built and model.layer_output_shapes() == [(None, 5, 4), (None, 20), (None, 2)]
    assert model.count_params() == 144 + 42


def test_a_linear_given_its_sizes_can_start_a_sequence_model():
    """``Linear(3, 8)`` is built for ``(N, 3)`` but takes ``(N, *, 3)``: a sequence layer after it defers."""
    from framework.layers import PositionalEncoding

    model = Sequential([Linear(3, 8), ReLU(), PositionalEncoding(8), Linear(8, 2)])
    assert not model.built  # the first batch tells the shape
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    assert model.predict(x, verbose=0).shape == (4, 5, 2)
    assert model.built and model.input_shape == (None, 5, 3)


def test_a_linear_stack_whose_sizes_do_not_fit_is_still_refused_at_once():
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, \*, 9\), got \(None, 8\)"):
        Sequential([Linear(3, 8), Linear(9, 2)])
    assert Sequential([Linear(3, 8), ReLU(), Linear(8, 2)]).built  # and an MLP is built from its sizes
