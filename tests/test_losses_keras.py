"""Issue 14 item 2: Keras-named cross-entropies take probabilities unless from_logits=True.

Also the compile protocol on ``Loss``: ``expects``, ``link``, ``backward_logits``
(the fused gradient) and ``check_output_pairing`` (the warning text), and a loss
given as a plain function (a clear ConfigError).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import requires_torch

from framework import losses
from framework.base.loss import Loss, check_output_pairing
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.namespace import serialize
from framework.testing import check_loss, numerical_gradient, relative_error
from plugins.losses import (
    BCEWithLogits,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    CrossEntropy,
    SparseCategoricalCrossentropy,
)

try:
    import torch

    F = torch.nn.functional
except ImportError:
    torch = F = None

RNG = np.random.default_rng(14)
Z = RNG.normal(size=(6, 4))
P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
LABELS = np.array([0, 3, 1, 1, 2, 3])
ONE_HOT = np.eye(4)[LABELS]
Z1 = RNG.normal(size=(6, 3))
S1 = 1.0 / (1.0 + np.exp(-Z1))
Y1 = RNG.integers(0, 2, Z1.shape).astype(float)
SW = RNG.uniform(0.2, 2.0, 6)


def gradient_error(loss, y_pred, y_true, **kwargs) -> float:
    y_pred = np.ascontiguousarray(y_pred, dtype=np.float64)
    loss.forward(y_pred, y_true, **kwargs)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(y_pred, y_true, **kwargs), y_pred, eps=1e-7)
    return relative_error(analytic, numeric)


# -- item 2: the names and their contract ------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "expects", "link"),
    [
        ("binary_crossentropy", BinaryCrossentropy, "probabilities", "sigmoid"),
        ("BinaryCrossentropy", BinaryCrossentropy, "probabilities", "sigmoid"),
        ("BCELoss", BinaryCrossentropy, "probabilities", "sigmoid"),
        ("categorical_crossentropy", CategoricalCrossentropy, "probabilities", "softmax"),
        ("sparse_categorical_crossentropy", SparseCategoricalCrossentropy, "probabilities", "softmax"),
        ("cross_entropy", CrossEntropy, "logits", "softmax"),
        ("CrossEntropyLoss", CrossEntropy, "logits", "softmax"),
        ("BCEWithLogitsLoss", BCEWithLogits, "logits", "sigmoid"),
        ("bce_with_logits", BCEWithLogits, "logits", "sigmoid"),
        ("mse", type(losses.get("mse")), None, None),
    ],
)
def test_item2_keras_names_default_to_probabilities_pytorch_names_to_logits(name, cls, expects, link):
    loss = losses.get(name)
    assert type(loss) is cls
    assert (loss.expects, loss.link) == (expects, link)


def test_item2_keras_binary_crossentropy_on_probabilities_is_not_a_second_sigmoid():
    """Fails on the old code, where the Keras name applied a sigmoid to the probabilities."""
    p = np.array([[0.9], [0.2], [0.7]])
    y = np.array([[1.0], [0.0], [1.0]])
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert losses.get("binary_crossentropy")(p, y) == pytest.approx(expected, rel=1e-12)


def test_item2_keras_categorical_crossentropy_on_probabilities_is_not_a_second_softmax():
    """Fails on the old code, where the Keras names applied a softmax to the probabilities."""
    expected = -np.mean(np.log(P[np.arange(6), LABELS]))
    assert losses.get("categorical_crossentropy")(P, ONE_HOT) == pytest.approx(expected, rel=1e-12)
    assert losses.get("sparse_categorical_crossentropy")(P, LABELS) == pytest.approx(expected, rel=1e-12)


def test_item2_from_logits_true_equals_the_pytorch_losses():
    assert BinaryCrossentropy(from_logits=True)(Z1, Y1) == pytest.approx(BCEWithLogits()(Z1, Y1), rel=1e-12)
    assert CategoricalCrossentropy(from_logits=True)(Z, ONE_HOT) == pytest.approx(CrossEntropy()(Z, LABELS))
    assert SparseCategoricalCrossentropy(from_logits=True)(Z, LABELS) == pytest.approx(
        CrossEntropy()(Z, LABELS)
    )
    # probabilities of the same logits give the same value
    assert BinaryCrossentropy()(S1, Y1) == pytest.approx(BCEWithLogits()(Z1, Y1), rel=1e-9)
    assert CategoricalCrossentropy()(P, ONE_HOT) == pytest.approx(CrossEntropy()(Z, LABELS), rel=1e-9)


def test_item2_probabilities_are_clipped_at_epsilon_1e7():
    p = np.array([0.0, 1.0])
    y = np.array([1.0, 0.0])
    assert BinaryCrossentropy()(p, y) == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert CategoricalCrossentropy()(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(
        -np.log(1e-7), rel=1e-6
    )


def test_item2_logits_given_to_a_probabilities_loss_raise_a_data_error():
    with pytest.raises(DataError, match="from_logits=True"):
        BinaryCrossentropy()(Z1, Y1)
    with pytest.raises(DataError, match="from_logits=True"):
        SparseCategoricalCrossentropy()(Z, LABELS)


GRADIENT_CASES = {
    "bce_probs": (BinaryCrossentropy(), S1, Y1, {}),
    "bce_probs_smoothing_weights": (BinaryCrossentropy(label_smoothing=0.2), S1, Y1, {"sample_weight": SW}),
    "bce_logits": (BinaryCrossentropy(from_logits=True, label_smoothing=0.1), Z1, Y1, {"sample_weight": SW}),
    "cce_probs": (CategoricalCrossentropy(), P, ONE_HOT, {}),
    "cce_probs_unnormalised": (CategoricalCrossentropy(), P * 0.7, ONE_HOT, {}),
    "cce_probs_smoothing_weights": (
        CategoricalCrossentropy(label_smoothing=0.1),
        P,
        ONE_HOT,
        {"sample_weight": SW},
    ),
    "cce_logits": (CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), Z, ONE_HOT, {}),
    "scce_probs": (SparseCategoricalCrossentropy(), P, LABELS, {"sample_weight": SW}),
    "scce_ignore": (SparseCategoricalCrossentropy(ignore_class=3), P, LABELS, {}),
    "scce_logits_ignore": (SparseCategoricalCrossentropy(from_logits=True, ignore_class=1), Z, LABELS, {}),
    "scce_spatial": (
        SparseCategoricalCrossentropy(),
        np.moveaxis(RNG.dirichlet(np.ones(3), size=(2, 2, 3)), -1, 1),
        RNG.integers(0, 3, (2, 2, 3)),
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_item2_keras_loss_backward_matches_finite_differences(case):
    loss, y_pred, y_true, kwargs = GRADIENT_CASES[case]
    assert gradient_error(loss, y_pred, y_true, **kwargs) < 1e-6


@pytest.mark.parametrize(
    ("loss", "y_pred", "y_true"),
    [
        (BinaryCrossentropy(), S1, Y1),
        (CategoricalCrossentropy(label_smoothing=0.1), P, ONE_HOT),
        (SparseCategoricalCrossentropy(), P, LABELS),
        (SparseCategoricalCrossentropy(from_logits=True), Z, LABELS),
    ],
)
def test_item2_keras_losses_pass_the_conformance_kit(loss, y_pred, y_true):
    assert check_loss(loss, y_pred, y_true).passed


def _torch_grad(fn, x):
    t = torch.tensor(x, requires_grad=True)
    value = fn(t)
    value.backward()
    return value.item(), t.grad.numpy()


@requires_torch
def test_item2_matches_torch_bceloss_and_nll_of_log_probabilities():
    value = BinaryCrossentropy()(S1, Y1, sample_weight=SW)
    ref, grad = _torch_grad(
        lambda t: (
            F.binary_cross_entropy(t, torch.tensor(Y1), reduction="none") * torch.tensor(SW)[:, None]
        ).mean(),
        S1,
    )
    assert value == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(
        BinaryCrossentropy().backward() if False else _last_backward(S1, Y1), grad, rtol=1e-8
    )

    loss = SparseCategoricalCrossentropy()
    value = loss(P, LABELS)
    ref, grad = _torch_grad(
        lambda t: F.nll_loss(torch.log(t / t.sum(dim=1, keepdim=True)), torch.tensor(LABELS)), P
    )
    assert value == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(loss.backward(), grad, rtol=1e-8, atol=1e-12)

    loss = CategoricalCrossentropy()
    value = loss(P, ONE_HOT)
    np.testing.assert_allclose(loss.backward(), grad, rtol=1e-8, atol=1e-12)


def _last_backward(p, y):
    loss = BinaryCrossentropy()
    loss(p, y, sample_weight=SW)
    return loss.backward()


# -- the fused gradient ---------------------------------------------------------


@requires_torch
def test_item2_backward_logits_is_the_gradient_through_the_activation():
    """(p - t) w / N equals the chain rule through softmax / sigmoid, and torch's logits gradient."""
    loss = CategoricalCrossentropy(label_smoothing=0.1)
    loss(P, ONE_HOT, sample_weight=SW)
    fused = loss.backward_logits()

    def through_softmax() -> float:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return CategoricalCrossentropy(label_smoothing=0.1)(
            e / e.sum(axis=1, keepdims=True), ONE_HOT, sample_weight=SW
        )

    z = Z.copy()
    assert relative_error(fused, numerical_gradient(through_softmax, z)) < 1e-6
    _, grad = _torch_grad(
        lambda t: (
            F.cross_entropy(t, torch.tensor(LABELS), reduction="none", label_smoothing=0.1) * torch.tensor(SW)
        ).mean(),
        Z,
    )
    np.testing.assert_allclose(fused, grad, rtol=1e-8, atol=1e-12)

    loss = SparseCategoricalCrossentropy()
    loss(P, LABELS)
    _, grad = _torch_grad(lambda t: F.cross_entropy(t, torch.tensor(LABELS)), Z)
    np.testing.assert_allclose(loss.backward_logits(), grad, rtol=1e-8, atol=1e-12)

    loss = BinaryCrossentropy()
    loss(S1, Y1, sample_weight=SW)
    _, grad = _torch_grad(
        lambda t: (
            F.binary_cross_entropy_with_logits(t, torch.tensor(Y1), reduction="none")
            * torch.tensor(SW)[:, None]
        ).mean(),
        Z1,
    )
    np.testing.assert_allclose(loss.backward_logits(), grad, rtol=1e-8, atol=1e-12)


def test_item2_fused_gradient_stays_finite_where_the_probabilities_saturate():
    p = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # a confident, wrong softmax
    loss = CategoricalCrossentropy()
    loss(p, np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32))
    fused = loss.backward_logits()
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, [[0.5, -0.5], [0.0, 0.0]])


def test_item2_backward_logits_protocol():
    with pytest.raises(NotImplementedError):
        Loss().backward_logits()
    with pytest.raises(NotImplementedError, match="logits"):
        BinaryCrossentropy(from_logits=True).backward_logits()


# -- the warning text ------------------------------------------------------------


def test_item2_check_output_pairing_messages():
    layer = "layer 'dense_1' (Linear, activation='softmax')"
    text = check_output_pairing(losses.get("cross_entropy"), "softmax", layer)
    assert text is not None and "dense_1" in text and "cross_entropy" in text and "twice" in text
    text = check_output_pairing(losses.get("binary_crossentropy"), None, "layer 'out' (Linear)")
    assert (
        text is not None and "from_logits=True" in text and "'out'" in text and "binary_crossentropy" in text
    )
    text = check_output_pairing(losses.get("categorical_crossentropy"), "sigmoid", "layer 'out' (Sigmoid)")
    assert text is not None and "softmax" in text
    assert check_output_pairing(losses.get("cross_entropy"), None, layer) is None
    assert check_output_pairing(losses.get("categorical_crossentropy"), "softmax", layer) is None
    assert check_output_pairing(losses.get("binary_crossentropy", from_logits=True), None, layer) is None
    assert check_output_pairing(losses.get("mse"), "sigmoid", layer) is None


# -- config, errors, plain functions --------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
        CategoricalCrossentropy(label_smoothing=0.2),
        SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    ],
)
def test_item2_config_round_trip_keeps_from_logits(loss):
    data = json.loads(json.dumps(serialize("losses", loss)))
    assert data["config"]["from_logits"] == loss.from_logits
    rebuilt = losses.get(data)
    assert type(rebuilt) is type(loss) and rebuilt.get_config() == loss.get_config()
    assert rebuilt.expects == loss.expects
    assert BinaryCrossentropy().get_config() == {"from_logits": False}


def test_item2_errors_name_the_argument():
    with pytest.raises(ConfigError, match="from_logits"):
        BinaryCrossentropy(from_logits="yes")
    with pytest.raises(ConfigError, match="label_smoothing"):
        CategoricalCrossentropy(label_smoothing=2.0)
    with pytest.raises(ShapeError, match="sparse_categorical_crossentropy"):
        CategoricalCrossentropy()(P, LABELS)
    with pytest.raises(DataError, match=r"label 4 .*C=4"):
        SparseCategoricalCrossentropy()(P, np.array([0, 1, 4, 1, 2, 3]))


def test_plain_function_as_loss_raises_config_error_pointing_at_loss():
    def my_loss(y_true, y_pred):
        return np.mean((y_true - y_pred) ** 2)

    with pytest.raises(ConfigError, match=r"(?s)'my_loss'.*backward.*framework\.Loss"):
        losses.get(my_loss)
