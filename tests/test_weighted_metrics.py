"""``compile(metrics=..., weighted_metrics=...)``: as in Keras, sample and class weights reach the loss
and the weighted metrics only (before, every metric was weighted, which Keras never does)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import framework
from framework import Sequential
from framework.errors import ConfigError
from framework.layers import Linear
from framework.optimizers import SGD


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4))
    return x, (x[:, 0] > 0).astype(np.int64), rng.uniform(0.0, 3.0, 30)


def _model(**compile_args) -> Sequential:
    framework.set_seed(1)
    model = Sequential([Linear(4, 2)])
    model.build((None, 4))
    model.compile(SGD(learning_rate=0.0), "cross_entropy", **compile_args)
    return model


def test_metrics_count_every_sample_once_and_weighted_metrics_weigh_them(float64):
    x, y, w = _data()
    model = _model(metrics=["accuracy"], weighted_metrics=["accuracy"])
    hits = (model.predict(x).argmax(axis=1) == y).astype(float)
    scores = model.evaluate(x, y, sample_weight=w, batch_size=7, verbose=0)
    assert scores["accuracy"] == pytest.approx(hits.mean(), rel=1e-12)
    assert scores["weighted_accuracy"] == pytest.approx((w * hits).sum() / w.sum(), rel=1e-12)
    history = model.fit(
        x, y, sample_weight=w, class_weight={0: 1.0, 1: 4.0}, validation_data=(x, y, w), epochs=1, verbose=0
    )
    assert history.history["accuracy"] == pytest.approx([hits.mean()], rel=1e-12)
    both = w * np.where(y == 1, 4.0, 1.0)
    assert history.history["weighted_accuracy"] == pytest.approx(
        [(both * hits).sum() / both.sum()], rel=1e-12
    )
    assert history.history["val_accuracy"] == pytest.approx([hits.mean()], rel=1e-12)
    assert history.history["val_weighted_accuracy"] == pytest.approx([(w * hits).sum() / w.sum()], rel=1e-12)


def test_weighted_metrics_survive_config_and_checkpoint(tmp_path: Path, float64):
    pytest.importorskip("h5py")
    x, y, w = _data()
    model = _model(metrics=["accuracy"], weighted_metrics=["accuracy", "precision"])
    expected = model.evaluate(x, y, sample_weight=w, verbose=0)
    assert list(expected) == ["loss", "accuracy", "weighted_accuracy", "precision"]
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    assert loaded.evaluate(x, y, sample_weight=w, verbose=0) == pytest.approx(expected, rel=1e-12)
    config = json.loads(json.dumps(model.compile_config()))
    again = _model()
    again.compile(**{**config, "optimizer": SGD(learning_rate=0.0)})
    assert again.evaluate(x, y, sample_weight=w, verbose=0) == pytest.approx(expected, rel=1e-12)


def test_a_function_in_both_lists_needs_another_name():
    def hits(y_true, y_pred):
        return (y_pred.argmax(axis=1) == y_true).astype(float)

    model = _model(metrics=[hits], weighted_metrics=[hits])  # a FunctionMetric keeps a name of its own
    assert [key for key in model.evaluate(*_data()[:2], verbose=0)] == ["loss", "hits", "weighted_hits"]

    class Plain:  # a duck-typed metric without a settable name
        name = "plain"

        def update(self, y_pred, y_true, sample_weight=None):
            pass

        def result(self):
            return 0.0

        def reset(self):
            pass

    with pytest.raises(ConfigError, match="in both metrics and weighted_metrics"):
        _model(metrics=[Plain()], weighted_metrics=[Plain()])


def test_a_metric_given_by_a_string_logs_under_that_string(tmp_path: Path, float64):
    """Keras names a string metric by the string: History keys 'acc', 'mean_absolute_error'."""
    x, y, _ = _data()
    model = _model(metrics=["acc", "mean_absolute_error", "MAE"])
    history = model.fit(x, np.eye(2)[y], validation_split=0.2, epochs=2, verbose=0)
    assert list(history.history) == [
        "loss",
        "acc",
        "mean_absolute_error",
        "MAE",
        "val_loss",
        "val_acc",
        "val_mean_absolute_error",
        "val_MAE",
    ]
    stopper = framework.training.callbacks.EarlyStopping(monitor="val_acc", patience=0, min_delta=1.0)
    model.fit(x, np.eye(2)[y], validation_split=0.2, epochs=5, verbose=0, callbacks=[stopper])
    assert stopper.stopped_epoch == 1  # it saw val_acc (mode max): no gain of 1.0, so it stops
    pytest.importorskip("h5py")
    model.save(tmp_path / "m.h5")
    assert list(framework.load_model(tmp_path / "m.h5").evaluate(x, np.eye(2)[y], verbose=0)) == [
        "loss",
        "acc",
        "mean_absolute_error",
        "MAE",
    ]


def test_a_metric_name_survives_saving(tmp_path: Path, float64):
    """A compiled metric's name is its log key; the saved compile config dropped it (``serialize``
    leaves names out), so a loaded model logged ``accuracy`` for ``Accuracy(name="hit_rate")``."""
    pytest.importorskip("h5py")
    from framework.metrics import Accuracy

    x, y, _ = _data()
    model = _model(metrics=[Accuracy(name="hit_rate"), "acc"])
    model.save(tmp_path / "m.h5")
    assert list(framework.load_model(tmp_path / "m.h5").evaluate(x, y, verbose=0)) == [
        "loss",
        "hit_rate",
        "acc",
    ]
