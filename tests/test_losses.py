"""Tests of the built-in losses: gradients, formula-level values, PyTorch semantics, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from framework import losses
from framework.errors import ConfigError, DataError, FrameworkError, ShapeError
from framework.registry.namespace import serialize
from framework.testing import numerical_gradient, relative_error
from plugins.losses import MAE, MSE, BCEWithLogits, CrossEntropy, Huber, MaskedCrossEntropy

try:  # optional parity checks
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = None


def check_loss_gradient(loss, y_pred, y_true, **kwargs) -> float:
    """Relative error between loss.backward() and central differences of loss.forward."""
    y_pred = np.array(y_pred, dtype=np.float64)
    loss.forward(y_pred, y_true, **kwargs)
    analytic = loss.backward()
    assert analytic.shape == y_pred.shape
    numeric = numerical_gradient(lambda: loss.forward(y_pred, y_true, **kwargs), y_pred, eps=1e-6)
    return relative_error(analytic, numeric)


def naive_log_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z)
    return np.log(e / e.sum(axis=1, keepdims=True))


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[labels]


RNG = np.random.default_rng(7)
Z = RNG.normal(size=(6, 4))
LABELS = np.array([0, 3, 1, 1, 2, 3])
CLASS_W = np.array([1.0, 2.0, 0.5, 3.0])
TARGET_REG = RNG.normal(size=(6, 4))


def _residual_away_from(values: np.ndarray, kinks: tuple[float, ...]) -> np.ndarray:
    """Targets so that y_pred - y_true avoids the loss's kinks by more than 0.05."""
    r = RNG.uniform(-2.5, 2.5, size=values.shape)
    for k in kinks:
        r = np.where(np.abs(r - k) < 0.05, r + 0.1, r)
    return values - r


GRADIENT_CASES = {
    "mse": (MSE(), Z, TARGET_REG, {}),
    "mse_column_vs_flat": (MSE(), Z[:, :1], TARGET_REG[:, 0], {}),
    "mae": (MAE(), Z, _residual_away_from(Z, (0.0,)), {}),
    "huber": (Huber(delta=0.8), Z, _residual_away_from(Z, (0.0, 0.8, -0.8)), {}),
    "ce_labels": (CrossEntropy(), Z, LABELS, {}),
    "ce_one_hot": (CrossEntropy(), Z, one_hot(LABELS, 4), {}),
    "ce_soft": (CrossEntropy(), Z, RNG.dirichlet(np.ones(4), size=6), {}),
    "ce_weight_smoothing": (CrossEntropy(weight=CLASS_W, label_smoothing=0.2), Z, LABELS, {}),
    "ce_soft_weight_smoothing": (
        CrossEntropy(weight=CLASS_W, label_smoothing=0.1),
        Z,
        RNG.dirichlet(np.ones(4), size=6),
        {},
    ),
    "ce_spatial": (
        CrossEntropy(weight=CLASS_W),
        RNG.normal(size=(2, 4, 3, 2)),
        RNG.integers(0, 4, (2, 3, 2)),
        {},
    ),
    "ce_ignore_index": (CrossEntropy(label_smoothing=0.1), Z, np.array([0, -100, 1, 1, -100, 3]), {}),
    "ce_sample_weight": (CrossEntropy(), Z, LABELS, {"sample_weight": RNG.uniform(0, 2, 6)}),
    "bce": (BCEWithLogits(), Z, RNG.integers(0, 2, Z.shape).astype(float), {}),
    "bce_soft_pos_weight": (
        BCEWithLogits(pos_weight=[1.0, 2.0, 0.5, 4.0]),
        Z,
        RNG.uniform(0, 1, Z.shape),
        {"sample_weight": RNG.uniform(0, 2, 6)},
    ),
    "masked_mask": (MaskedCrossEntropy(mask=[True, False, True, True, False, True]), Z, LABELS, {}),
    "masked_minus_one": (MaskedCrossEntropy(weight=CLASS_W), Z, np.array([0, -1, 1, -1, 2, 3]), {}),
    "mse_sample_weight": (MSE(), Z, TARGET_REG, {"sample_weight": RNG.uniform(0, 2, 6)}),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_backward_matches_finite_differences(case):
    loss, y_pred, y_true, kwargs = GRADIENT_CASES[case]
    assert check_loss_gradient(loss, y_pred, y_true, **kwargs) < 1e-6


def test_backward_before_forward_raises():
    with pytest.raises(FrameworkError, match="forward"):
        CrossEntropy().backward()


# -- regression losses -------------------------------------------------------


def test_mse_mae_values_against_formula():
    a = np.array([[1.0, -2.0], [0.5, 4.0]])
    b = np.array([[0.0, 1.0], [0.5, 1.0]])
    assert MSE()(a, b) == pytest.approx((1 + 9 + 0 + 9) / 4)
    assert MAE()(a, b) == pytest.approx((1 + 3 + 0 + 3) / 4)


def test_huber_value_quadratic_and_linear_regions():
    pred = np.array([0.5, 3.0, -2.0])
    true = np.zeros(3)
    delta = 1.5
    expected = (0.5 * 0.25 + delta * (3.0 - 0.75) + delta * (2.0 - 0.75)) / 3
    assert Huber(delta=delta)(pred, true) == pytest.approx(expected)


def test_regression_gradient_divides_by_element_count():
    loss = MSE()
    pred = np.array([[2.0, 0.0, 0.0]])
    loss(pred, np.zeros((1, 3)))
    np.testing.assert_allclose(loss.backward(), [[4.0 / 3, 0.0, 0.0]])


def test_float32_is_preserved():
    z = np.zeros((3, 2), dtype=np.float32)
    for loss, target in ((MSE(), np.ones((3, 2))), (CrossEntropy(), np.array([0, 1, 1]))):
        loss(z, target)
        assert loss.backward().dtype == np.float32


# -- cross-entropy -------------------------------------------------------------


def test_cross_entropy_value_against_naive_softmax():
    expected = -np.mean(naive_log_softmax(Z)[np.arange(6), LABELS])
    assert CrossEntropy()(Z, LABELS) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(
        _grad(CrossEntropy(), Z, LABELS),
        (np.exp(Z) / np.exp(Z).sum(1, keepdims=True) - one_hot(LABELS, 4)) / 6,
        rtol=1e-12,
        atol=1e-15,
    )


def _grad(loss, y_pred, y_true, **kwargs):
    loss.forward(y_pred, y_true, **kwargs)
    return loss.backward()


def test_label_smoothing_value():
    eps = 0.3
    q = (1 - eps) * one_hot(LABELS, 4) + eps / 4
    expected = -np.mean((q * naive_log_softmax(Z)).sum(axis=1))
    assert CrossEntropy(label_smoothing=eps)(Z, LABELS) == pytest.approx(expected, rel=1e-12)


def test_class_weights_follow_pytorch_weighted_mean():
    log_p = naive_log_softmax(Z)
    w_y = CLASS_W[LABELS]
    expected = np.sum(w_y * -log_p[np.arange(6), LABELS]) / np.sum(w_y)
    assert CrossEntropy(weight=CLASS_W)(Z, LABELS) == pytest.approx(expected, rel=1e-12)


def test_class_weights_with_smoothing_follow_pytorch_formula():
    eps = 0.2
    log_p = naive_log_softmax(Z)
    w_y = CLASS_W[LABELS]
    nll = np.sum(w_y * -log_p[np.arange(6), LABELS]) / np.sum(w_y)
    smooth = np.sum(-(log_p * CLASS_W).sum(axis=1)) / np.sum(w_y)
    expected = (1 - eps) * nll + eps / 4 * smooth
    assert CrossEntropy(weight=CLASS_W, label_smoothing=eps)(Z, LABELS) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"weight": CLASS_W, "label_smoothing": 0.15}])
def test_integer_and_one_hot_targets_agree(kwargs):
    a, b = CrossEntropy(**kwargs), CrossEntropy(**kwargs)
    assert a(Z, LABELS) == pytest.approx(b(Z, one_hot(LABELS, 4)), rel=1e-12)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-12, atol=1e-16)


def test_label_column_and_float_labels_accepted():
    expected = CrossEntropy()(Z, LABELS)
    assert CrossEntropy()(Z, LABELS[:, None]) == pytest.approx(expected)
    assert CrossEntropy()(Z, LABELS.astype(np.float32)) == pytest.approx(expected)


def test_spatial_cross_entropy_is_mean_over_positions():
    z = RNG.normal(size=(2, 3, 4))
    y = RNG.integers(0, 3, size=(2, 4))
    flat_z = z.transpose(0, 2, 1).reshape(-1, 3)
    assert CrossEntropy()(z, y) == pytest.approx(CrossEntropy()(flat_z, y.reshape(-1)), rel=1e-12)


def test_ignore_index_excludes_samples():
    y = np.array([0, -100, 1, 1, -100, 3])
    keep = y != -100
    loss = CrossEntropy()
    assert loss(Z, y) == pytest.approx(CrossEntropy()(Z[keep], y[keep]), rel=1e-12)
    grad = loss.backward()
    assert np.all(grad[~keep] == 0)


def test_sample_weight_uses_keras_mean_of_weighted_losses():
    w = np.array([0.0, 1.0, 2.0, 0.5, 1.0, 3.0])
    per_sample = np.array([CrossEntropy()(Z[i : i + 1], LABELS[i : i + 1]) for i in range(6)])
    assert CrossEntropy()(Z, LABELS, sample_weight=w) == pytest.approx(np.mean(w * per_sample), rel=1e-12)
    per_sample_mse = ((Z - TARGET_REG) ** 2).mean(axis=1)
    assert MSE()(Z, TARGET_REG, sample_weight=w) == pytest.approx(np.mean(w * per_sample_mse), rel=1e-12)


def test_large_logits_are_stable():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 1000.0]])
    loss = CrossEntropy(label_smoothing=0.1)
    value = loss(z, np.array([2, 0]))
    grad = loss.backward()
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert CrossEntropy()(z, np.array([2, 0])) == pytest.approx((2000.0 + 1000.0 + np.log(2)) / 2)

    bce = BCEWithLogits()
    value = bce(np.array([1000.0, -1000.0, 1000.0]), np.array([0.0, 1.0, 1.0]))
    assert value == pytest.approx(2000.0 / 3)
    assert np.all(np.isfinite(bce.backward()))


# -- binary cross-entropy ------------------------------------------------------


def test_bce_value_against_naive_formula():
    z = RNG.normal(size=(5, 2))
    y = RNG.uniform(0, 1, size=(5, 2))
    s = 1 / (1 + np.exp(-z))
    expected = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert BCEWithLogits()(z, y) == pytest.approx(expected, rel=1e-12)
    pw = np.array([3.0, 0.5])
    expected_pw = -np.mean(pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    assert BCEWithLogits(pos_weight=pw)(z, y) == pytest.approx(expected_pw, rel=1e-12)


def test_bce_column_against_flat_targets():
    z = RNG.normal(size=(4, 1))
    y = np.array([0, 1, 1, 0])
    loss = BCEWithLogits()
    assert loss(z, y) == pytest.approx(BCEWithLogits()(z[:, 0], y))
    assert loss.backward().shape == (4, 1)


# -- masked cross-entropy --------------------------------------------------------


def test_masked_cross_entropy_equals_cross_entropy_on_selected_nodes():
    mask = np.array([True, False, True, True, False, True])
    loss = MaskedCrossEntropy(mask=mask)
    assert loss(Z, LABELS) == pytest.approx(CrossEntropy()(Z[mask], LABELS[mask]), rel=1e-12)
    grad = loss.backward()
    assert np.all(grad[~mask] == 0)
    np.testing.assert_allclose(grad[mask], _grad(CrossEntropy(), Z[mask], LABELS[mask]), rtol=1e-12)


def test_masked_cross_entropy_by_labels_and_call_mask():
    y = np.array([0, -1, 1, -100, 2, 3])
    keep = y >= 0
    expected = CrossEntropy()(Z[keep], y[keep])
    assert MaskedCrossEntropy()(Z, y) == pytest.approx(expected, rel=1e-12)
    call_mask = np.array([True, True, False, True, True, False])
    both = keep & call_mask
    value = MaskedCrossEntropy()(Z, y, mask=call_mask)
    assert value == pytest.approx(CrossEntropy()(Z[both], y[both]), rel=1e-12)


def test_masked_cross_entropy_one_hot_and_empty_mask():
    mask = np.array([False, True, True, False, False, True])
    value = MaskedCrossEntropy(mask=mask)(Z, one_hot(LABELS, 4))
    assert value == pytest.approx(CrossEntropy()(Z[mask], LABELS[mask]), rel=1e-12)
    empty = MaskedCrossEntropy(mask=np.zeros(6, bool))
    assert empty(Z, LABELS) == 0.0
    assert np.all(empty.backward() == 0)


# -- PyTorch parity (optional) ------------------------------------------------------


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(smoothing, weighted):
    y = np.array([0, 3, -100, 1, 2, 3])
    weight = CLASS_W if weighted else None
    loss = CrossEntropy(weight=weight, label_smoothing=smoothing)
    value = loss(Z, y)
    t = torch.tensor(Z, requires_grad=True)
    ref = F.cross_entropy(
        t, torch.tensor(y), weight=None if weight is None else torch.tensor(weight), label_smoothing=smoothing
    )
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), t.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_bce_and_regression_losses_match_torch():
    y = RNG.uniform(0, 1, size=Z.shape)
    pw = np.array([1.0, 2.0, 0.5, 3.0])
    pairs = [
        (
            BCEWithLogits(pos_weight=pw),
            lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=torch.tensor(pw)),
        ),
        (MSE(), F.mse_loss),
        (MAE(), F.l1_loss),
        (Huber(0.5), lambda a, b: F.huber_loss(a, b, delta=0.5)),
    ]
    for ours, theirs in pairs:
        value = ours(Z, y)
        t = torch.tensor(Z, requires_grad=True)
        ref = theirs(t, torch.tensor(y))
        ref.backward()
        assert value == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(ours.backward(), t.grad.numpy(), rtol=1e-10, atol=1e-15)


# -- errors, registry, config ----------------------------------------------------


def test_shape_mismatch_names_loss_and_shapes():
    with pytest.raises(ShapeError, match=r"MSE.*\(4, 3\).*\(4, 2\)"):
        MSE()(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match=r"CrossEntropy.*\(6,\).*\(5,\)"):
        CrossEntropy()(Z, LABELS[:5])
    with pytest.raises(ShapeError, match="BCEWithLogits"):
        BCEWithLogits()(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ShapeError, match="sample_weight"):
        MSE()(Z, TARGET_REG, sample_weight=np.ones(5))
    with pytest.raises(ShapeError, match="mask"):
        MaskedCrossEntropy(mask=np.ones(5, bool))(Z, LABELS)
    with pytest.raises(ShapeError, match="weight"):
        CrossEntropy(weight=[1.0, 2.0])(Z, LABELS)


def test_label_out_of_range_names_value_and_classes():
    with pytest.raises(DataError, match=r"label 4 .*C=4"):
        CrossEntropy()(Z, np.array([0, 1, 4, 1, 2, 3]))
    with pytest.raises(DataError, match="label -1"):
        CrossEntropy()(Z, np.array([0, 1, -1, 1, 2, 3]))
    with pytest.raises(DataError, match="integers"):
        CrossEntropy()(Z, np.array([0, 1, 0.5, 1, 2, 3]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        BCEWithLogits()(np.zeros(2), np.array([0.0, 2.0]))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Huber(delta=0), "delta"),
        (lambda: CrossEntropy(label_smoothing=1.5), "label_smoothing"),
        (lambda: CrossEntropy(weight=[1.0, -1.0]), "weight"),
        (lambda: CrossEntropy(ignore_index=1.5), "ignore_index"),
        (lambda: BCEWithLogits(pos_weight=-1.0), "pos_weight"),
        (lambda: MaskedCrossEntropy(mask=[[True]]), "mask"),
    ],
)
def test_invalid_hyperparameters_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mse", MSE),
        ("mean_squared_error", MSE),
        ("MSELoss", MSE),
        ("mae", MAE),
        ("L1Loss", MAE),
        ("huber", Huber),
        ("cross_entropy", CrossEntropy),
        ("CrossEntropyLoss", CrossEntropy),
        ("bce_with_logits", BCEWithLogits),
        ("binary_cross_entropy_with_logits", BCEWithLogits),
        ("BCEWithLogitsLoss", BCEWithLogits),
        ("masked_cross_entropy", MaskedCrossEntropy),
    ],
)
def test_registered_names(name, cls):
    assert type(losses.get(name)) is cls


@pytest.mark.parametrize(
    "loss",
    [
        Huber(delta=2.0),
        CrossEntropy(weight=[1.0, 2.0, 3.0, 4.0], label_smoothing=0.1, ignore_index=-1),
        BCEWithLogits(pos_weight=[2.0, 1.0, 1.0, 3.0]),
        MaskedCrossEntropy(mask=[True, False, True, True, False, True], label_smoothing=0.05),
    ],
)
def test_config_round_trip_through_json(loss):
    data = json.loads(json.dumps(serialize("losses", loss)))
    rebuilt = losses.get(data)
    assert type(rebuilt) is type(loss)
    assert rebuilt.get_config() == loss.get_config()
    if isinstance(loss, BCEWithLogits):
        y = RNG.integers(0, 2, size=Z.shape)
    elif isinstance(loss, Huber):
        y = TARGET_REG
    else:
        y = LABELS
    assert rebuilt(Z, y) == loss(Z, y)
