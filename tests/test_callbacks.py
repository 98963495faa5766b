"""Callbacks: hooks order, History, EarlyStopping, ModelCheckpoint, LR callbacks, NaN, CSV, progress."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import Sequential
from framework.layers import Linear
from framework.training.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype=np.float32)).astype(np.float32)
    return x, y


def make_model(lr: float = 0.05) -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(3, 8, activation="tanh"), Linear(8, 1)])
    model.compile(framework.optimizers.get("sgd", learning_rate=lr), "mse", metrics=["mae"])
    return model


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_begin(self, batch, logs=None):  # the older name still works
        self.calls.append(f"batch_begin {batch}")

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(f"batch_end {batch} {sorted(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_hooks_are_called_in_keras_order(data):
    x, y = data
    model = make_model()
    rec = Recorder()
    model.fit(x, y, epochs=2, batch_size=32, validation_data=(x, y), callbacks=[rec], verbose=0)
    assert rec.model is model and rec.params["epochs"] == 2 and rec.params["steps"] == 2
    assert rec.calls == [
        "train_begin",
        "epoch_begin 0",
        "batch_begin 0",
        "batch_end 0 ['loss', 'mae']",
        "batch_begin 1",
        "batch_end 1 ['loss', 'mae']",
        "epoch_end 0 ['loss', 'mae', 'val_loss', 'val_mae']",
        "epoch_begin 1",
        "batch_begin 0",
        "batch_end 0 ['loss', 'mae']",
        "batch_begin 1",
        "batch_end 1 ['loss', 'mae']",
        "epoch_end 1 ['loss', 'mae', 'val_loss', 'val_mae']",
        "train_end",
    ]


def test_callbacks_must_be_callbacks(data):
    x, y = data
    with pytest.raises(framework.ConfigError, match="Callback instances"):
        make_model().fit(x, y, callbacks=[print], verbose=0)


def test_early_stopping_stops_and_restores_best_weights(data):
    x, y = data
    model = make_model(lr=0.05)
    seen: list[tuple[float, dict]] = []
    # Record the weights after every epoch, then make the monitored value worsen from epoch 2 on.
    scores = [5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 8.0, 9.0, 9.5, 9.9]

    class Score(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]
            seen.append((scores[epoch], {k: v.copy() for k, v in self.model.state_dict().items()}))

    stopper = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, callbacks=[Score(), stopper], verbose=0)
    assert history.epoch == [0, 1, 2, 3, 4]
    assert stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    assert model.epoch == 5
    best = seen[2][1]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, best[name])
    assert not np.array_equal(seen[4][1]["linear.weight"], best["linear.weight"])


def test_early_stopping_max_mode_and_min_delta(data):
    x, y = data
    model = make_model()
    values = iter([0.5, 0.505, 0.509, 0.6, 0.6, 0.6])
    inject = LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__("val_accuracy", next(values)))
    stopper = EarlyStopping(monitor="val_accuracy", min_delta=0.01, patience=2)
    assert stopper.mode == "max"
    history = model.fit(x, y, epochs=6, callbacks=[inject, stopper], verbose=0)
    assert len(history.epoch) == 3  # 0.505 and 0.509 are not 0.01 better than 0.5


@requires_h5py
def test_model_checkpoint_writes_files(tmp_path, data):
    if not hasattr(framework.models.model.Model, "save"):
        pytest.skip("model.save is not available")
    pytest.importorskip("framework.saving.checkpoint")
    x, y = data
    model = make_model()
    every = ModelCheckpoint(str(tmp_path / "every-{epoch:02d}.h5"), save_weights_only=True)
    best = ModelCheckpoint(str(tmp_path / "best.h5"), monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=3, validation_data=(x, y), callbacks=[every, best], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.h5",
        "every-01.h5",
        "every-02.h5",
        "every-03.h5",
    ]
    assert len(best.saved) >= 1
    loaded = framework.load_model(tmp_path / "best.h5")
    assert loaded.predict(x).shape == (64, 1)
    weights_only = make_model()
    weights_only.load_weights(tmp_path / "every-03.h5")
    np.testing.assert_array_equal(weights_only.predict(x), model.predict(x))


def test_model_checkpoint_bad_filepath_field(tmp_path, data):
    x, y = data
    with pytest.raises(framework.ConfigError, match="cannot format filepath"):
        make_model().fit(x, y, epochs=1, callbacks=[ModelCheckpoint(str(tmp_path / "{nope}.h5"))], verbose=0)


def test_terminate_on_nan_stops_at_the_first_nan_batch(data, capsys):
    x, y = data
    model = make_model()
    y_bad = y.copy()
    y_bad[40] = np.nan
    nan_cb = TerminateOnNaN()
    history = model.fit(
        x, y_bad, epochs=5, batch_size=16, shuffle=False, callbacks=[nan_cb], verbose=0, check_finite=False
    )
    assert nan_cb.stopped_batch == 2
    assert len(history.epoch) == 1 and np.isnan(history.history["loss"][0])
    assert "invalid loss" in capsys.readouterr().out


def test_reduce_lr_on_plateau(data):
    x, y = data
    model = make_model(lr=0.1)
    flat = LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__("val_loss", 1.0))
    reduce = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.02)
    history = model.fit(x, y, epochs=7, callbacks=[flat, reduce], verbose=0)
    # Epoch 0 sets the best; epochs 1-2 wait, reduce at 2; 3-4, reduce at 4; 5-6, at 6 (floored).
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert model.optimizer.lr == pytest.approx(0.02)
    with pytest.raises(framework.ConfigError, match="factor"):
        ReduceLROnPlateau(factor=1.5)


def test_learning_rate_scheduler(data):
    x, y = data
    model = make_model(lr=0.1)
    rates = []
    sched = LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)
    spy = LambdaCallback(on_epoch_begin=lambda epoch, logs: rates.append(model.optimizer.lr))
    history = model.fit(x, y, epochs=3, callbacks=[sched, spy], verbose=0)
    assert rates == pytest.approx([0.1, 0.05, 0.025])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_csv_logger(tmp_path, data):
    x, y = data
    path = tmp_path / "log.csv"
    model = make_model()
    history = model.fit(x, y, epochs=3, validation_data=(x, y), callbacks=[CSVLogger(path)], verbose=0)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [float(r["loss"]) for r in rows] == pytest.approx(history.history["loss"])
    assert set(rows[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    model.fit(x, y, epochs=1, callbacks=[CSVLogger(path, append=True)], verbose=0)
    with open(path) as f:
        assert len(list(csv.DictReader(f))) == 4


def test_lambda_callback_rejects_unknown_hooks():
    with pytest.raises(framework.ConfigError, match="unknown hooks"):
        LambdaCallback(on_epoc_end=print)


def test_stop_training_from_a_batch_hook(data):
    x, y = data
    model = make_model()
    stop = LambdaCallback(on_batch_end=lambda batch, logs: setattr(model, "stop_training", batch == 1))
    batches = []
    spy = LambdaCallback(on_train_batch_begin=lambda batch, logs: batches.append(batch))
    history = model.fit(x, y, epochs=3, batch_size=8, callbacks=[stop, spy], verbose=0)
    assert batches == [0, 1] and history.epoch == [0]


def test_progress_output_by_verbosity(data, capsys):
    x, y = data
    model = make_model()
    model.fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, validation_data=(x, y), verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "val_loss" in lines[1]
    model.fit(x, y, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss" in out and "2/2" in out
