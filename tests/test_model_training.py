"""compile / fit / evaluate / predict: models that must learn, data adapters, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.layers import Conv2d, Flatten, Linear, MaxPool2d


def spirals(n_per_class: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.0, 1.0, n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, 0.01, (2 * n_per_class, 2))
    y = np.concatenate([np.zeros(n_per_class, dtype=np.int64), np.ones(n_per_class, dtype=np.int64)])
    return x.astype(np.float32), y


def test_mlp_separates_two_spirals():
    framework.set_seed(0)
    x, y = spirals()
    model = Sequential([Linear(2, 64, activation="relu"), Linear(64, 64, activation="relu"), Linear(64, 2)])
    model.compile(
        optimizer=framework.optimizers.get("adam", learning_rate=0.01),
        loss="cross_entropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0, seed=0)  # 98% by epoch 10
    assert history.history["accuracy"][-1] >= 0.98
    assert model.evaluate(x, y)["accuracy"] >= 0.98
    assert history.history["loss"][-1] < history.history["loss"][0] / 10


def test_regression_mlp_fits_sine():
    framework.set_seed(1)
    x = np.linspace(-np.pi, np.pi, 256, dtype=np.float32)[:, None]
    y = np.sin(x)
    model = Sequential([Linear(1, 32, activation="tanh"), Linear(32, 32, activation="tanh"), Linear(32, 1)])
    model.compile(optimizer=framework.optimizers.get("adam", learning_rate=0.01), loss="mse")
    model.fit(x, y, epochs=85, batch_size=32, verbose=0, seed=1)  # its MSE then about 1e-4
    pred = model.predict(x)
    assert pred.shape == (256, 1)
    assert float(np.mean((pred - y) ** 2)) < 1e-3
    assert model.evaluate(x, y)["loss"] < 1e-3


def bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images with one vertical (label 0) or horizontal (label 1) bar plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, 8, n)
    for label in (0, 1):
        idx = np.nonzero(y == label)[0]
        if label == 0:
            x[idx, 0, :, pos[idx]] += 1.0
        else:
            x[idx, 0, pos[idx], :] += 1.0
    return x, y


def test_small_cnn_learns_bar_orientation():
    framework.set_seed(2)
    x, y = bars(256, seed=0)
    x_test, y_test = bars(128, seed=1)
    model = Sequential(
        [Conv2d(1, 4, 3, padding=1, activation="relu"), MaxPool2d(2), Flatten(), Linear(64, 2)]
    )
    model.compile(framework.optimizers.get("adam", learning_rate=0.01), "cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=32, verbose=0, seed=0)
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.95


def test_fit_history_keys_validation_and_mode():
    framework.set_seed(3)
    x, y = spirals(50)
    model = Sequential([Linear(2, 16, activation="relu"), framework.layers.Dropout(0.5), Linear(16, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    model.eval()
    history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]
    assert model.epoch == 3
    assert model.training is False  # fit restores the mode it found
    history = model.fit(x, y, epochs=5, initial_epoch=3, validation_data=(x, y), verbose=0)
    assert history.epoch == [3, 4] and model.epoch == 5


def test_history_loss_is_mean_of_batch_losses():
    framework.set_seed(4)
    x, y = spirals(40)
    model = Sequential([Linear(2, 8, activation="relu"), Linear(8, 2)])
    model.compile(framework.optimizers.get("sgd", learning_rate=0.0), "cross_entropy")
    losses = []
    cb = framework.training.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(logs["loss"])
    )
    history = model.fit(x, y, epochs=1, batch_size=16, shuffle=False, callbacks=[cb], verbose=0)
    assert len(losses) == 5
    # Batch logs carry the running mean of the epoch so far; the last one is the epoch's loss.
    assert history.history["loss"][0] == pytest.approx(losses[-1], rel=1e-12)
    running = np.array(losses)
    steps = np.arange(1, len(running) + 1)
    batch_losses = running * steps - np.concatenate([[0.0], running[:-1] * steps[:-1]])
    assert history.history["loss"][0] == pytest.approx(np.mean(batch_losses), rel=1e-12)
    # With a zero learning rate, evaluate sees the same weights: a sample-weighted mean.
    sizes = np.array([16, 16, 16, 16, 16])
    assert model.evaluate(x, y, batch_size=16)["loss"] == pytest.approx(
        np.average(batch_losses, weights=sizes), rel=1e-5
    )


def test_predict_is_independent_of_batch_size_and_in_eval_mode():
    framework.set_seed(5)
    x, _ = spirals(50)
    model = Sequential([Linear(2, 16, activation="relu"), framework.layers.Dropout(0.5), Linear(16, 3)])
    full = model.predict(x, batch_size=100)
    for batch_size in (1, 7, 32):
        np.testing.assert_allclose(model.predict(x, batch_size=batch_size), full, rtol=1e-6, atol=1e-6)
    assert model.training is True
    model.eval()
    np.testing.assert_allclose(model(x), full, rtol=1e-6, atol=1e-6)


def test_inputs_of_another_dtype_are_cast_at_the_edge():
    model = Sequential([Linear(2, 3)])
    out = model(np.ones((4, 2), dtype=np.float64))
    assert out.dtype == np.float32
    assert model.predict(np.ones((4, 2), dtype=np.int64)).dtype == np.float32
    x, y = spirals(20)
    model.compile("sgd", "cross_entropy")
    model.fit(x.astype(np.float64), y, epochs=1, verbose=0)
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_seed_gives_bit_identical_weights():
    x, y = spirals(60)

    def run(seed: int) -> list[np.ndarray]:
        framework.set_seed(seed)
        model = Sequential([Linear(2, 16, activation="relu"), framework.layers.Dropout(0.2), Linear(16, 2)])
        model.compile("adam", "cross_entropy")
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=seed)
        return [p.data.copy() for p in model.parameters()]

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_fit_seed_controls_shuffling():
    x, y = spirals(60)
    results = []
    for seed in (1, 1, 2):
        framework.set_seed(0)
        model = Sequential([Linear(2, 8, activation="relu"), Linear(8, 2)])
        model.compile("sgd", "cross_entropy")
        framework.set_seed(100 + len(results))  # the global generator differs every run
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=seed)
        results.append(model.parameters()[0].data.copy())
    assert np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_generator_and_batch_list_inputs():
    framework.set_seed(6)
    x, y = spirals(64)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, len(x), 16)]
    model = Sequential([Linear(2, 8, activation="relu"), Linear(8, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    history = model.fit(batches, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 3

    def endless():
        while True:
            yield from batches

    history = model.fit(endless(), epochs=2, steps_per_epoch=4, verbose=0)
    assert len(history.history["loss"]) == 2
    result = model.evaluate(iter(batches))
    assert set(result) == {"loss", "accuracy"}
    assert model.predict(iter(b[0] for b in batches)).shape == (128, 2)
    with pytest.raises(framework.DataError, match="steps_per_epoch"):
        model.fit((b for b in batches), epochs=2, verbose=0)


def test_h5py_datasets_are_read_batch_by_batch(tmp_path):
    h5py = pytest.importorskip("h5py")
    framework.set_seed(7)
    x, y = spirals(64)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"] = x.astype(np.float64)
        f["y"] = y
    with h5py.File(tmp_path / "data.h5", "r") as f:
        model = Sequential([Linear(2, 16, activation="relu"), Linear(16, 2)])
        model.compile(
            framework.optimizers.get("adam", learning_rate=0.01), "cross_entropy", metrics=["accuracy"]
        )
        history = model.fit(f["x"], f["y"], epochs=20, batch_size=16, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
        np.testing.assert_allclose(model.predict(f["x"]), model.predict(x), rtol=1e-6, atol=1e-6)
        in_memory = model.evaluate(x, y)
        from_file = model.evaluate(f["x"], f["y"])
        assert from_file["loss"] == pytest.approx(in_memory["loss"], rel=1e-5)


def test_class_weight_changes_the_gradient():
    x, y = spirals(40)
    weights = []
    for class_weight in (None, {0: 1.0, 1: 1.0}, {0: 0.0, 1: 2.0}):
        framework.set_seed(8)
        model = Sequential([Linear(2, 4)])
        model.compile("sgd", "cross_entropy")
        model.fit(x, y, epochs=1, batch_size=80, class_weight=class_weight, verbose=0)
        weights.append(model.parameters()[0].data.copy())
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-6)
    assert not np.allclose(weights[0], weights[2])


class HandBuilt(Model):
    """The seed's style: layers as attributes, forward and backward written by hand."""

    def __init__(self) -> None:
        super().__init__(name="hand_built")
        self.hidden = Linear(2, 32, activation="relu")
        self.out = Linear(32, 2)

    def forward(self, x):
        return self.out(self.hidden(x))

    def backward(self, grad):
        return self.hidden.backward(self.out.backward(grad))


def test_custom_model_subclass_trains_with_fit():
    framework.set_seed(9)
    x, y = spirals(100)
    model = HandBuilt()
    assert [n for n, _ in model.named_parameters()] == [
        "hidden.weight",
        "hidden.bias",
        "out.weight",
        "out.bias",
    ]
    model.compile(framework.optimizers.get("adam", learning_rate=0.01), "cross_entropy", metrics=["accuracy"])
    reference = Sequential([Linear(2, 32, activation="relu"), Linear(32, 2)])
    reference.load_state_dict(
        {
            k.replace("hidden", "linear").replace("out", "linear_1"): v.copy()
            for k, v in model.state_dict().items()
        }
    )
    reference.compile(
        framework.optimizers.get("adam", learning_rate=0.01), "cross_entropy", metrics=["accuracy"]
    )
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0, seed=3)
    expected = reference.fit(x, y, epochs=40, batch_size=32, verbose=0, seed=3)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    assert history.history == expected.history
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert model.predict(x).shape == (200, 2)
    text = model.summary(print_fn=lambda line: None)
    assert "hidden" in text and f"Total params: {model.count_params():,}" in text


def test_train_on_batch_and_manual_loop_agree():
    x, y = spirals(16)
    framework.set_seed(10)
    a = Sequential([Linear(2, 4, activation="tanh"), Linear(4, 2)])
    framework.set_seed(10)
    b = Sequential([Linear(2, 4, activation="tanh"), Linear(4, 2)])
    a.compile("sgd", "cross_entropy")
    loss_a = a.train_on_batch(x, y)
    loss_fn = framework.losses.get("cross_entropy")
    opt = framework.optimizers.get("sgd")
    opt.bind(b)
    loss_b = loss_fn(b(x), y)
    opt.zero_grad()
    b.backward(loss_fn.backward())
    opt.step()
    assert loss_a == pytest.approx(loss_b)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


# -- bad input -----------------------------------------------------------------


@pytest.fixture
def compiled():
    model = Sequential([Linear(2, 8, activation="relu"), Linear(8, 3)])
    model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    return model


def test_x_and_y_of_different_lengths(compiled):
    with pytest.raises(framework.DataError, match=r"x has 10 samples, y has 9"):
        compiled.fit(np.zeros((10, 2)), np.zeros(9, dtype=np.int64), verbose=0)


def test_labels_outside_the_classes(compiled):
    with pytest.raises(framework.DataError, match=r"label 3 is outside \[0, 3\)"):
        compiled.fit(np.zeros((4, 2)), np.array([0, 1, 2, 3]), verbose=0)


def test_fit_before_compile():
    model = Sequential([Linear(2, 3)])
    with pytest.raises(framework.NotCompiledError, match="compile"):
        model.fit(np.zeros((4, 2)), np.zeros(4, dtype=np.int64), verbose=0)
    with pytest.raises(framework.NotCompiledError):
        model.evaluate(np.zeros((4, 2)), np.zeros(4, dtype=np.int64))


def test_empty_array(compiled):
    with pytest.raises(framework.DataError, match="empty"):
        compiled.fit(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), verbose=0)
    with pytest.raises(framework.DataError, match="empty"):
        compiled.predict(np.zeros((0, 2)))


def test_batch_of_the_wrong_shape(compiled):
    with pytest.raises(framework.ShapeError, match=r"Linear layer 'linear'.*\(N, \*, 2\).*\(4, 5\)"):
        compiled.fit(np.zeros((4, 5)), np.zeros(4, dtype=np.int64), verbose=0)
    with pytest.raises(framework.ShapeError, match="linear"):
        compiled.predict(np.zeros((4, 5)))


def test_unknown_loss_name():
    model = Sequential([Linear(2, 3)])
    with pytest.raises(framework.UnknownNameError, match=r"'nope'.*cross_entropy|'nope'.*CrossEntropy"):
        model.compile("sgd", "nope")
    with pytest.raises(framework.UnknownNameError, match="optimizer"):
        model.compile("nope", "mse")


def test_bad_fit_arguments(compiled):
    x, y = np.zeros((4, 2)), np.zeros(4, dtype=np.int64)
    with pytest.raises(framework.ConfigError, match="batch_size"):
        compiled.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(framework.ConfigError, match="validation_split"):
        compiled.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(framework.DataError, match="y is None"):
        compiled.fit(x, verbose=0)


def test_two_input_model_needs_a_list_of_two():
    a, b = Input((2,)), Input((3,))
    model = Model([a, b], Linear(5, 2)(framework.layers.Concatenate()([a, b])))
    model.compile("sgd", "mse")
    with pytest.raises(framework.DataError, match="2 inputs"):
        model.forward(np.zeros((2, 2)))
    with pytest.raises(framework.DataError, match="2 inputs"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 2)), verbose=0)
