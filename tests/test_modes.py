"""Issue 14 item 1: the mode of a call (Keras's contract).

``fit`` runs in training mode and returns the model in inference mode, also when it raises or is
interrupted; ``evaluate`` and ``predict`` run in inference mode and leave every flag as found;
``model(x, training=...)`` sets the mode of one call without changing any flag.
"""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Sequential
from framework.layers import BatchNorm, Dropout, Linear


def _model() -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(4, 16), BatchNorm(16), Dropout(0.5), Linear(16, 2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 4)).astype(np.float32), rng.standard_normal((32, 2)).astype(np.float32)


def test_item1_after_fit_a_call_is_in_inference_mode() -> None:
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not any(layer.training for layer in model.layers)
    bn = model.layers[1]
    stats = bn.running_mean.data.copy()
    first, second = model(x), model(x)
    np.testing.assert_array_equal(first, second)  # no dropout
    np.testing.assert_array_equal(bn.running_mean.data, stats)  # no statistics overwritten
    np.testing.assert_array_equal(first, model.predict(x))


def test_item1_fit_returns_in_inference_mode_when_a_callback_raises() -> None:
    model = _model()
    x, y = _data()

    class Boom(framework.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[Boom()])
    assert not any(layer.training for layer in model.layers)


def test_item1_evaluate_and_predict_leave_the_flags_as_found() -> None:
    model = _model()
    x, y = _data()
    model.train()
    bn = model.layers[1]
    stats = bn.running_mean.data.copy()
    a = model.predict(x)
    model.evaluate(x, y)
    assert all(layer.training for layer in model.layers)  # as found: training
    np.testing.assert_array_equal(bn.running_mean.data, stats)
    np.testing.assert_array_equal(a, model.predict(x))  # inference: deterministic
    model.eval()
    model.predict(x)
    assert not any(layer.training for layer in model.layers)


def test_item1_training_argument_sets_one_call_only() -> None:
    model = _model()
    x, _ = _data()
    model.eval()
    bn = model.layers[1]
    stats = bn.running_mean.data.copy()
    out = model(x, training=True)
    assert not np.array_equal(bn.running_mean.data, stats)  # batch statistics used and tracked
    assert not any(layer.training for layer in model.layers)  # flags unchanged
    assert not np.array_equal(out, model(x))
    model.train()
    np.testing.assert_array_equal(model(x, training=False), model.predict(x))
    assert all(layer.training for layer in model.layers)
