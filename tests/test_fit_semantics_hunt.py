"""fit / evaluate / predict against hand-computed float64 references (Keras semantics unless documented).

A linear model with MSE and plain SGD: one step on a batch ``B`` is the closed form
``W -= lr * (2 / (|B| k)) * (w * r).T @ x_B`` with ``r = x_B W^T + b - y_B``, so whole epochs
can be replayed with NumPy and compared to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.base.layer import Layer
from framework.errors import ConfigError, DataError
from framework.layers import Embedding, Flatten, Linear
from framework.optimizers import SGD
from framework.training.callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint

RTOL = 1e-12


class Spy(Layer):
    """Identity that records column 0 of what it sees in training mode (the sample ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[np.ndarray] = []

    def forward(self, ctx, x):
        if ctx.training:
            self.seen.append(np.array(x[:, 0]))
        return x

    def backward(self, ctx, grad_out):
        return grad_out


def regression(n: int = 10, d: int = 3, k: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, d))
    x[:, 0] = np.arange(n)  # the sample id, read by Spy
    y = gen.standard_normal((n, k))
    return x, y


def linear(d: int = 3, k: int = 1, lr: float = 0.01, metrics=None, spy: bool = False) -> Sequential:
    """A linear model whose ``metrics`` are compiled as weighted_metrics (the tests weight them)."""
    framework.set_seed(0)
    layers = ([Spy()] if spy else []) + [Linear(d, k)]
    model = Sequential(layers)
    model.compile(SGD(learning_rate=lr), "mse", weighted_metrics=metrics or [])
    return model


def weights(model: Sequential) -> tuple[np.ndarray, np.ndarray]:
    state = model.state_dict()
    w = next(v for key, v in state.items() if key.endswith("weight"))
    b = next(v for key, v in state.items() if key.endswith("bias"))
    return np.array(w), np.array(b)


def mse(w, b, x, y, sw=None) -> float:
    r = x @ w.T + b - y
    per = np.mean(r**2, axis=1)
    sw = np.ones(len(x)) if sw is None else np.asarray(sw, dtype=np.float64).reshape(-1)
    return float(np.sum(sw * per) / len(x))


def replay(w, b, x, y, batches, lr, sw=None):
    """SGD on MSE over ``batches`` (index arrays): final (w, b), batch losses, sizes, squared errors."""
    w, b = w.copy(), b.copy()
    losses, sizes, errors = [], [], []
    for idx in batches:
        xb, yb = x[idx], y[idx]
        wb = np.ones(len(idx)) if sw is None else sw[idx]
        r = xb @ w.T + b - yb
        losses.append(float(np.mean(wb[:, None] * r**2)))
        sizes.append(len(idx))
        errors.append(np.mean(r**2, axis=1))
        g = 2.0 * wb[:, None] * r / r.size
        w -= lr * g.T @ xb
        b -= lr * g.sum(axis=0)
    return w, b, np.array(losses), np.array(sizes), np.concatenate(errors)


def consecutive(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(n, s + size)) for s in range(0, n, size)]


# ---------------------------------------------------------------- batching, splitting, shuffling


def test_validation_split_takes_the_last_samples_and_shuffles_only_the_rest(float64):
    x, y = regression(n=20)
    model = linear(spy=True, lr=0.0)
    history = model.fit(x, y, epochs=3, batch_size=5, validation_split=0.3, verbose=0, seed=7)
    spy = model.layers[0]
    assert len(spy.seen) == 9  # 14 training samples: 5, 5, 4 per epoch
    assert [len(s) for s in spy.seen[:3]] == [5, 5, 4]
    epochs = [np.concatenate(spy.seen[i : i + 3]) for i in range(0, 9, 3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(14))
    assert any(not np.array_equal(order, np.arange(14)) for order in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    w, b = weights(model)
    np.testing.assert_allclose(history.history["val_loss"], [mse(w, b, x[14:], y[14:])] * 3, rtol=RTOL)


def test_shuffle_false_gives_consecutive_batches_and_a_smaller_last_one(float64):
    x, y = regression(n=10)
    model = linear(spy=True)
    model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    got = [s.tolist() for s in model.layers[0].seen]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2


def test_default_batch_size_is_32(float64):
    x, y = regression(n=70)
    model = linear(spy=True)
    rec = Recorder()
    model.fit(x, y, epochs=1, shuffle=False, verbose=0, callbacks=[rec])
    assert [len(s) for s in model.layers[0].seen] == [32, 32, 6]
    assert rec.params["batch_size"] == 32 and rec.params["steps"] == 3


def test_fit_trajectory_matches_closed_form_sgd_with_sample_weight(float64):
    x, y = regression(n=10)
    sw = np.linspace(0.5, 2.0, 10)
    model = linear(lr=0.05)
    w0, b0 = weights(model)
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, sample_weight=sw[:, None], verbose=0)
    w_ref, b_ref, *_ = replay(w0, b0, x, y, consecutive(10, 4), 0.05, sw)
    w, b = weights(model)
    np.testing.assert_allclose(w, w_ref, rtol=RTOL)
    np.testing.assert_allclose(b, b_ref, rtol=RTOL)


def test_epoch_loss_weights_a_smaller_last_batch_by_its_size(float64):
    x, y = regression(n=10)
    model = linear(lr=0.05, metrics=["mse"])
    w0, b0 = weights(model)
    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    _, _, losses, sizes, errors = replay(w0, b0, x, y, consecutive(10, 4), 0.05)
    # The stateful metric is the whole epoch's mean, and Keras's loss tracker is the same mean.
    np.testing.assert_allclose(history.history["mse"][0], errors.mean(), rtol=RTOL)
    np.testing.assert_allclose(history.history["loss"][0], np.average(losses, weights=sizes), rtol=RTOL)


def test_epoch_loss_is_the_mean_of_batch_losses_as_documented(float64):
    """The documented value ("the mean of the batch losses") with the weighted loss sum(w l)/B per batch."""
    x, y = regression(n=12)
    sw = np.linspace(0.0, 3.0, 12)
    model = linear(lr=0.05, metrics=["mse"])
    w0, b0 = weights(model)
    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, sample_weight=sw, verbose=0)
    _, _, losses, _, errors = replay(w0, b0, x, y, consecutive(12, 4), 0.05, sw)
    np.testing.assert_allclose(history.history["loss"][0], losses.mean(), rtol=RTOL)
    # weighted metrics: sum(w m) / sum(w), at each batch's pre-step weights
    np.testing.assert_allclose(history.history["mse"][0], np.sum(sw * errors) / sw.sum(), rtol=RTOL)


def test_batch_logs_are_running_means(float64):
    x, y = regression(n=12)
    model = linear(lr=0.05, metrics=["mse"])
    w0, b0 = weights(model)
    logs_seen = []
    cb = LambdaCallback(on_train_batch_end=lambda batch, logs: logs_seen.append(dict(logs)))
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, callbacks=[cb], verbose=0)
    _, _, losses, _, errors = replay(w0, b0, x, y, consecutive(12, 4), 0.05)
    np.testing.assert_allclose([d["loss"] for d in logs_seen], np.cumsum(losses) / [1, 2, 3], rtol=RTOL)
    np.testing.assert_allclose(
        [d["mse"] for d in logs_seen], np.cumsum(errors)[[3, 7, 11]] / [4, 8, 12], rtol=RTOL
    )


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 32])
@pytest.mark.parametrize("weighting", ["none", "flat", "column"])
def test_evaluate_is_the_whole_data_loss_for_any_batch_size(float64, batch_size, weighting):
    x, y = regression(n=13, k=2)
    model = linear(k=2, metrics=["mse"])
    w, b = weights(model)
    sw = np.linspace(0.1, 2.0, 13)
    given = {"none": None, "flat": sw, "column": sw[:, None]}[weighting]
    logs = model.evaluate(x, y, batch_size=batch_size, sample_weight=given)
    np.testing.assert_allclose(logs["loss"], mse(w, b, x, y, None if given is None else sw), rtol=RTOL)
    per = np.mean((x @ w.T + b - y) ** 2, axis=1)
    expected_metric = per.mean() if given is None else np.sum(sw * per) / sw.sum()
    np.testing.assert_allclose(logs["mse"], expected_metric, rtol=RTOL)


def test_validation_data_with_weights_is_evaluated_at_the_epoch_end_weights(float64):
    x, y = regression(n=10)
    xv, yv = regression(n=7, seed=3)
    wv = np.linspace(0.0, 1.0, 7)
    model = linear(lr=0.05)
    at_end = []
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: at_end.append((weights(model), dict(logs))))
    model.fit(x, y, epochs=2, batch_size=3, validation_data=(xv, yv, wv), callbacks=[cb], verbose=0)
    for (w, b), logs in at_end:
        np.testing.assert_allclose(logs["val_loss"], mse(w, b, xv, yv, wv), rtol=RTOL)


# ---------------------------------------------------------------- class_weight


def classifier() -> Sequential:
    framework.set_seed(1)
    model = Sequential([Linear(3, 3)])
    model.compile(SGD(learning_rate=0.1), "cross_entropy")
    return model


@pytest.mark.parametrize(
    "target",
    [
        "sparse",
        "one_hot",
        pytest.param(
            "sparse_column",
        ),
    ],
)
def test_class_weight_with_a_missing_class_equals_sample_weight(float64, target):
    gen = np.random.default_rng(2)
    x = gen.standard_normal((12, 3))
    labels = np.array([0, 1, 2] * 4)
    y = {
        "sparse": labels,
        "one_hot": np.eye(3)[labels],
        "sparse_column": labels[:, None],
    }[target]
    a, b = classifier(), classifier()
    a.fit(x, y, epochs=1, batch_size=5, shuffle=False, class_weight={1: 3.0}, verbose=0)
    b.fit(
        x,
        labels,
        epochs=1,
        batch_size=5,
        shuffle=False,
        sample_weight=np.array([1.0, 3.0, 1.0] * 4),
        verbose=0,
    )
    for key, value in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[key], value, rtol=RTOL)


def test_class_weight_and_sample_weight_multiply(float64):
    gen = np.random.default_rng(3)
    x = gen.standard_normal((9, 3))
    labels = np.array([0, 1, 2] * 3)
    sw = np.linspace(0.5, 1.5, 9)
    a, b = classifier(), classifier()
    a.fit(
        x,
        labels,
        epochs=1,
        batch_size=4,
        shuffle=False,
        class_weight={0: 2.0, 2: 0.5},
        sample_weight=sw,
        verbose=0,
    )
    b.fit(
        x,
        labels,
        epochs=1,
        batch_size=4,
        shuffle=False,
        sample_weight=sw * np.array([2.0, 1.0, 0.5] * 3),
        verbose=0,
    )
    for key, value in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[key], value, rtol=RTOL)


# ---------------------------------------------------------------- epochs, steps


def test_initial_epoch_runs_the_remaining_epochs_and_numbers_them(float64):
    x, y = regression(n=8)
    model = linear()
    begun = []
    cb = LambdaCallback(on_epoch_begin=lambda epoch, logs: begun.append(epoch))
    history = model.fit(x, y, epochs=4, initial_epoch=1, callbacks=[cb], verbose=0)
    assert begun == [1, 2, 3] and history.epoch == [1, 2, 3] and len(history.history["loss"]) == 3
    w0 = weights(model)[0]
    history = model.fit(x, y, epochs=2, initial_epoch=2, verbose=0)
    assert history.epoch == [] and history.history.get("loss", []) == []
    np.testing.assert_array_equal(weights(model)[0], w0)


def test_steps_per_epoch_with_a_generator_continues_it_across_epochs(float64):
    x, y = regression(n=12)
    model = linear(lr=0.05)
    w0, b0 = weights(model)
    order = [np.arange(i, i + 2) % 12 for i in range(0, 40, 2)]

    def endless():
        for idx in order:
            yield x[idx], y[idx]

    rec = Recorder()
    history = model.fit(endless(), epochs=2, steps_per_epoch=3, callbacks=[rec], verbose=0)
    assert rec.params["steps"] == 3
    assert [c[1] for c in rec.calls if c[0] == "batch_begin"] == [0, 1, 2, 0, 1, 2]
    w_ref, b_ref, losses, _, _ = replay(w0, b0, x, y, order[:6], 0.05)
    w, b = weights(model)
    np.testing.assert_allclose(w, w_ref, rtol=RTOL)
    np.testing.assert_allclose(b, b_ref, rtol=RTOL)
    np.testing.assert_allclose(history.history["loss"], [losses[:3].mean(), losses[3:].mean()], rtol=RTOL)


def test_steps_per_epoch_with_arrays_is_honoured_or_refused(float64):
    x, y = regression(n=10)
    model = linear(spy=True)
    try:
        model.fit(x, y, epochs=1, batch_size=2, steps_per_epoch=2, shuffle=False, verbose=0)
    except ConfigError:
        return
    assert len(model.layers[0].seen) == 2


# ---------------------------------------------------------------- predict


def test_predict_keeps_input_order_for_any_batch_size_and_needs_no_compile(float64):
    x, _ = regression(n=11)
    framework.set_seed(0)
    model = Sequential([Linear(3, 2)])
    w, b = weights(model)
    for batch_size in (1, 2, 5, 11, 32, None):
        np.testing.assert_allclose(model.predict(x, batch_size=batch_size), x @ w.T + b, rtol=RTOL)


def test_predict_multi_output_list_and_generator_concatenation(float64):
    framework.set_seed(0)
    inp = Input((3,), name="inp")
    first = Linear(3, 2, name="first")(inp)
    second = Linear(3, 1, name="second")(inp)
    model = Model(inp, [first, second])
    x, _ = regression(n=9)
    whole = [
        x @ weights(model.get_layer(name))[0].T + weights(model.get_layer(name))[1]
        for name in ("first", "second")
    ]
    out = model.predict(x, batch_size=4)
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (9, 2) and out[1].shape == (9, 1)
    np.testing.assert_allclose(out[0], whole[0], rtol=RTOL)
    np.testing.assert_allclose(out[1], whole[1], rtol=RTOL)
    gen_out = model.predict(x[i : i + 2] for i in range(0, 9, 2))
    np.testing.assert_allclose(gen_out[0], out[0], rtol=RTOL)
    np.testing.assert_allclose(gen_out[1], out[1], rtol=RTOL)
    pairs = model.predict((x[i : i + 4], None) for i in range(0, 9, 4))
    np.testing.assert_allclose(pairs[1], out[1], rtol=RTOL)


def test_predict_casts_float64_to_float32_and_keeps_integers_for_embedding():
    framework.set_seed(0)
    model = Sequential([Linear(3, 2)])
    out = model.predict(np.ones((4, 3), dtype=np.float64))
    assert out.dtype == np.float32
    emb = Sequential([Embedding(10, 4), Flatten()])
    ids = np.array([[1, 9], [3, 0], [2, 2]], dtype=np.int64)
    table = emb.state_dict()[next(iter(emb.state_dict()))]
    out = emb.predict(ids, batch_size=2)
    np.testing.assert_array_equal(out, table[ids].reshape(3, -1))


# ---------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def _add(self, *entry):
        self.calls.append(entry)

    def on_train_begin(self, logs=None):
        self._add("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._add("epoch_begin", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._add("batch_begin", batch)

    def on_train_batch_end(self, batch, logs=None):
        self._add("batch_end", batch, dict(logs))

    def on_test_begin(self, logs=None):
        self._add("test_begin")

    def on_test_batch_begin(self, batch, logs=None):
        self._add("test_batch_begin", batch)

    def on_test_batch_end(self, batch, logs=None):
        self._add("test_batch_end", batch, dict(logs))

    def on_test_end(self, logs=None):
        self._add("test_end", dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self._add("epoch_end", epoch, dict(logs))

    def on_train_end(self, logs=None):
        self._add("train_end", dict(logs or {}))


def test_validation_hooks_run_inside_the_epoch_with_the_val_logs(float64):
    x, y = regression(n=6)
    xv, yv = regression(n=5, seed=4)
    model = linear(lr=0.05)
    rec = Recorder()
    model.fit(
        x, y, epochs=1, batch_size=4, shuffle=False, validation_data=(xv, yv), callbacks=[rec], verbose=0
    )
    names = [c[0] if len(c) == 1 or isinstance(c[1], dict) else f"{c[0]} {c[1]}" for c in rec.calls]
    assert names == [
        "train_begin",
        "epoch_begin 0",
        "batch_begin 0",
        "batch_end 0",
        "batch_begin 1",
        "batch_end 1",
        "test_begin",
        "test_batch_begin 0",
        "test_batch_end 0",
        "test_batch_begin 1",
        "test_batch_end 1",
        "test_end",
        "epoch_end 0",
        "train_end",
    ]
    w, b = weights(model)
    test_end = rec.calls[11][1]
    epoch_end = rec.calls[12][2]
    np.testing.assert_allclose(test_end["loss"], mse(w, b, xv, yv), rtol=RTOL)
    np.testing.assert_allclose(epoch_end["val_loss"], test_end["loss"], rtol=RTOL)
    assert sorted(epoch_end) == ["loss", "val_loss"]
    assert rec.calls[-1][1]["val_loss"] == epoch_end["val_loss"]  # on_train_end gets the last epoch's logs


def test_test_batch_logs_are_running_means_like_train_batch_logs(float64):
    x, y = regression(n=6)
    model = linear()
    rec = Recorder()
    logs = model.evaluate(x, y, batch_size=4, callbacks=[rec])
    batch_logs = [c[2] for c in rec.calls if c[0] == "test_batch_end"]
    np.testing.assert_allclose(batch_logs[-1]["loss"], logs["loss"], rtol=RTOL)


def _scores_callback(model, scores, snapshots):
    """Injects ``scores[epoch]`` as the log key ``score`` and records the weights at each epoch end."""

    def record(epoch, logs):
        logs["score"] = scores[epoch]
        snapshots.append(weights(model))

    return LambdaCallback(on_epoch_end=record)


@pytest.mark.parametrize(
    ("scores", "kwargs", "best", "epochs_run"),
    [
        ([3.0, 2.0, 1.0, 0.5], {"patience": 1}, 3, 4),  # best is the last epoch
        ([3.0, 1.0, 2.0, 2.5, 2.7], {"patience": 10}, 1, 5),  # never stops, still restores
        ([0.1, 3.0, 2.0, 2.5, 2.7, 2.9], {"patience": 2, "start_from_epoch": 1}, 2, 5),
    ],
)
def test_early_stopping_restores_the_best_epoch_exactly(float64, scores, kwargs, best, epochs_run):
    x, y = regression(n=8)
    model = linear(lr=0.05)
    snapshots: list = []
    stopper = EarlyStopping(monitor="score", restore_best_weights=True, **kwargs)
    history = model.fit(
        x,
        y,
        epochs=len(scores),
        batch_size=3,
        callbacks=[_scores_callback(model, scores, snapshots), stopper],
        verbose=0,
    )
    assert len(history.epoch) == epochs_run
    assert stopper.best_epoch == best
    w, b = weights(model)
    np.testing.assert_array_equal(w, snapshots[best][0])
    np.testing.assert_array_equal(b, snapshots[best][1])


def test_early_stopping_baseline_stops_after_patience(float64):
    x, y = regression(n=8)
    model = linear(lr=0.05)
    snapshots: list = []
    stopper = EarlyStopping(monitor="score", patience=2, baseline=0.5)
    history = model.fit(
        x,
        y,
        epochs=6,
        callbacks=[_scores_callback(model, [1.0, 0.9, 0.8, 0.7, 0.6, 0.4], snapshots), stopper],
        verbose=0,
    )
    # Keras 3 (keras/src/callbacks/early_stopping.py): an improving epoch never stops training,
    # even one that has not beaten the baseline (its wait is not reset, though)
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    model = linear(lr=0.05)
    stopper = EarlyStopping(monitor="score", patience=2, baseline=0.5)
    history = model.fit(
        x,
        y,
        epochs=6,
        callbacks=[_scores_callback(model, [1.0, 0.9, 0.95, 0.7, 0.6, 0.4], []), stopper],
        verbose=0,
    )
    assert history.epoch == [0, 1, 2]  # the first epoch not improving, with 3 >= patience waited


def test_model_checkpoint_save_best_only_keeps_the_best_epoch(float64, tmp_path):
    x, y = regression(n=8)
    model = linear(lr=0.05)
    snapshots: list = []
    path = tmp_path / "best.npz"
    ckpt = ModelCheckpoint(path, monitor="score", save_best_only=True, save_weights_only=True)
    model.fit(
        x,
        y,
        epochs=5,
        callbacks=[_scores_callback(model, [3.0, 1.0, 2.0, 0.5, 0.7], snapshots), ckpt],
        verbose=0,
    )
    assert len(ckpt.saved) == 3  # epochs 0, 1, 3
    fresh = linear()
    fresh.load_weights(path)
    w, b = weights(fresh)
    np.testing.assert_array_equal(w, snapshots[3][0])
    np.testing.assert_array_equal(b, snapshots[3][1])


def test_stop_training_in_on_epoch_end_stops_after_that_epoch_with_validation(float64):
    x, y = regression(n=8)
    model = linear(lr=0.05)
    stop = LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", epoch == 1))
    history = model.fit(x, y, epochs=5, validation_split=0.25, callbacks=[stop], verbose=0)
    assert history.epoch == [0, 1] and len(history.history["val_loss"]) == 2 and model.epoch == 2


def test_stop_training_mid_epoch_logs_the_partial_epoch(float64):
    x, y = regression(n=12)
    model = linear(lr=0.05)
    w0, b0 = weights(model)
    stop = LambdaCallback(on_train_batch_end=lambda batch, logs: setattr(model, "stop_training", batch == 1))
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, callbacks=[stop], verbose=0)
    w_ref, b_ref, losses, _, _ = replay(w0, b0, x, y, consecutive(12, 4)[:2], 0.05)
    assert history.epoch == [0]
    np.testing.assert_allclose(history.history["loss"], [losses.mean()], rtol=RTOL)
    np.testing.assert_allclose(weights(model)[0], w_ref, rtol=RTOL)
    np.testing.assert_allclose(weights(model)[1], b_ref, rtol=RTOL)


# ---------------------------------------------------------------- bad inputs


@pytest.fixture
def small():
    x, y = regression(n=6)
    return linear(), x, y


def test_fit_without_y_is_refused(small):
    model, x, _ = small
    with pytest.raises(DataError, match="y is None"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(DataError, match="y is None"):
        model.evaluate(x)


def test_string_targets_are_named(small):
    model, x, _ = small
    with pytest.raises(DataError, match=r"^y: .*string"):
        model.fit(x, np.array(["a"] * 6), epochs=1, verbose=0)


def test_nan_in_sample_weight_is_named_and_can_be_allowed(small):
    model, x, y = small
    sw = np.ones(6)
    sw[4] = np.nan
    with pytest.raises(DataError, match=r"sample_weight contains nan at index 4"):
        model.fit(x, y, sample_weight=sw, epochs=1, verbose=0)
    bad = x.copy()
    bad[2, 1] = np.inf
    with pytest.raises(DataError, match=r"x contains inf at index \(2, 1\)"):
        model.evaluate(bad, y)
    with np.errstate(invalid="ignore", over="ignore"):
        model.fit(bad, y, epochs=1, verbose=0, check_finite=False)  # allowed when asked


@pytest.mark.parametrize(
    ("sw", "match"),
    [(np.ones(5), r"shape \(6,\), got \(5,\)"), (np.ones((6, 2)), r"shape \(6,\), got \(6, 2\)")],
)
def test_sample_weight_of_the_wrong_shape(small, sw, match):
    model, x, y = small
    with pytest.raises(DataError, match=match):
        model.fit(x, y, sample_weight=sw, epochs=1, verbose=0)


def test_bad_validation_data_is_refused_before_training(small):
    model, x, y = small
    w0 = weights(model)[0]
    with pytest.raises(DataError, match="x has 6 samples, y has 5"):
        model.fit(x, y, validation_data=(x, y[:5]), epochs=1, verbose=0)
    with pytest.raises(DataError, match="string"):
        model.fit(x, y, validation_data=(x.astype(str), y), epochs=1, verbose=0)
    vx = x.copy()
    vx[0, 2] = np.nan
    with pytest.raises(DataError, match="contains nan"):
        model.fit(x, y, validation_data=(vx, y), epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="tuple of 4"):
        model.fit(x, y, validation_data=(x, y, None, None), epochs=1, verbose=0)
    np.testing.assert_array_equal(weights(model)[0], w0)


def test_class_weight_bad_keys(small):
    _, x, _ = small
    labels = np.zeros(6, dtype=np.int64)
    framework.set_seed(0)
    clf = Sequential([Linear(3, 2)])
    clf.compile("sgd", "cross_entropy")
    with pytest.raises(ConfigError, match=">= 0"):
        clf.fit(x, labels, class_weight={-1: 2.0}, epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="non-empty dict"):
        clf.fit(x, labels, class_weight={}, epochs=1, verbose=0)


def test_dict_with_a_wrong_key_to_a_functional_model(float64):
    framework.set_seed(0)
    inp = Input((3,), name="features")
    model = Model(inp, Linear(3, 1, name="out")(inp))
    model.compile("sgd", "mse")
    x, y = regression(n=6)
    with pytest.raises(DataError, match=r"unknown: \['feature'\]; missing: \['features'\]"):
        model.fit({"feature": x}, y, epochs=1, verbose=0)
    with pytest.raises(DataError, match=r"unknown: \['outt'\]"):
        model.evaluate({"features": x}, {"outt": y})
    with pytest.raises(DataError, match="unknown"):
        model.predict({"feature": x})
