"""Issue 14 items 2 and 3 through compile and fit: the loss/activation pairing warning,
the fused softmax/sigmoid gradient, and accuracy that knows what the model outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.layers import Linear, Sigmoid, Softmax


def _classes(n: int = 64, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def test_item2_softmax_model_with_a_logits_loss_warns_naming_layer_and_loss() -> None:
    model = Sequential([Linear(4, 3), Softmax(name="probs")])
    with pytest.warns(UserWarning, match=r"'probs'.*cross_entropy.*twice"):
        model.compile(optimizer="sgd", loss="cross_entropy")


def test_item2_logits_model_with_a_probabilities_loss_warns() -> None:
    model = Sequential([Linear(4, 3, name="logits")])
    with pytest.warns(UserWarning, match=r"'logits'.*sparse_categorical_crossentropy"):
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")


def test_item2_consistent_pairs_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sequential([Linear(4, 3), Softmax()]).compile(loss="sparse_categorical_crossentropy")
        Sequential([Linear(4, 3)]).compile(loss="cross_entropy")
        Sequential([Linear(4, 3, activation="softmax")]).compile(loss="sparse_categorical_crossentropy")
        Sequential([Linear(4, 1), Sigmoid()]).compile(loss="binary_crossentropy")
        Sequential([Linear(4, 1)]).compile(loss=framework.losses.get("binary_crossentropy", from_logits=True))


def test_item2_keras_program_trains_like_the_logits_program() -> None:
    """A Keras-style model (softmax + sparse_categorical_crossentropy) equals the PyTorch-style one."""
    x, y = _classes()
    framework.set_seed(3)
    keras_style = Sequential([Linear(4, 3), Softmax()])
    framework.set_seed(3)
    torch_style = Sequential([Linear(4, 3)])
    keras_style.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    torch_style.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
    assert keras_style._fused_output and not torch_style._fused_output
    h1 = keras_style.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    h2 = torch_style.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        keras_style.layers[0].weight.data, torch_style.layers[0].weight.data, rtol=1e-5
    )
    np.testing.assert_allclose(h1.history["accuracy"], h2.history["accuracy"])


def test_item2_fused_gradient_is_stable_where_the_chain_rule_is_not() -> None:
    """A saturated softmax: the fused gradient is (p - y)/N, finite; the clipped chain rule would vanish."""
    x = Input((2,))
    model = Model(x, Softmax()(Linear(2, 3, name="big")(x)))
    model.get_layer("big").weight.data[...] = np.array([[40.0, 0], [0, 40.0], [-40.0, -40.0]])
    model.compile(optimizer=framework.optimizers.get("sgd", lr=0.1), loss="sparse_categorical_crossentropy")
    assert model._fused_output
    before = model.get_layer("big").weight.data.copy()
    model.fit(np.array([[1.0, 0.0]], dtype=np.float32), np.array([1]), epochs=1, verbose=0)
    change = model.get_layer("big").weight.data - before
    assert np.all(np.isfinite(change)) and np.abs(change).max() > 0.05  # (p - y) ~ 1 on the wrong class


def test_item3_accuracy_on_logits_thresholds_at_zero_through_compile() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 2)).astype(np.float32)
    y = (x[:, 0] > 0.05).astype(np.float32)[:, None]
    model = Sequential([Linear(2, 1)])
    model.build((None, 2))
    model.layers[0].weight.data[...] = [[10.0, 0.0]]
    model.layers[0].bias.data[...] = [-0.5]  # logits > 0 exactly where x0 > 0.05
    model.compile(loss="bce_with_logits", metrics=["accuracy"])
    result = model.evaluate(x, y)
    logits = model.predict(x)
    assert result["accuracy"] == pytest.approx(float(np.mean((logits > 0) == (y > 0.5))))
    assert result["accuracy"] == 1.0
