"""Bug hunt: every registered loss and metric against PyTorch, Keras's formulas and scikit-learn.

Losses are compared in float64 with PyTorch's value and autograd gradient (PyTorch
names) or a NumPy transcription of Keras's formula and finite differences (Keras
names), for every option the loss takes, K-dimensional inputs, extreme logits,
ignored positions, sample weights and wrong target shapes. Metrics are compared with
scikit-learn (or hand-computed references) over uneven, weighted batches.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin a bug found here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from framework import losses, metrics
from framework.errors import ConfigError, ShapeError
from framework.testing import numerical_gradient, relative_error
from plugins.losses import (
    MAE,
    MSE,
    BCEWithLogits,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    CrossEntropy,
    Huber,
    MaskedCrossEntropy,
    SparseCategoricalCrossentropy,
)
from plugins.metrics import (
    AUC,
    Accuracy,
    ConfusionMatrix,
    F1Score,
    MeanAbsoluteError,
    MeanSquaredError,
    Precision,
    Recall,
    TopKAccuracy,
)

EPS = 1e-7  # Keras's fuzz factor
RNG = np.random.default_rng(2026)
W4 = np.array([1.0, 2.0, 0.5, 3.0])


@pytest.fixture(autouse=True)
def _fresh_rng(monkeypatch):
    """Each test draws its own data from a fresh generator, whichever tests run before it."""
    monkeypatch.setitem(globals(), "RNG", np.random.default_rng(11))


def _torch():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


def _skm():
    return pytest.importorskip("sklearn.metrics")


def _torch_value_and_grad(fn, x):
    torch, _ = _torch()
    t = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    value = fn(t)
    value.backward()
    return value.item(), t.grad.numpy()


def _ours(loss, y_pred, y_true, **kwargs):
    value = loss(np.asarray(y_pred, dtype=np.float64), y_true, **kwargs)
    return value, loss.backward()


def _assert_same(ours, ref, rtol=1e-12, grad_rtol=1e-10):
    value, grad = ours
    ref_value, ref_grad = ref
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=1e-300)
    assert grad.shape == ref_grad.shape
    np.testing.assert_allclose(grad, ref_grad, rtol=grad_rtol, atol=1e-15 * max(1.0, np.abs(ref_grad).max()))


def _fd_error(loss, y_pred, y_true, **kwargs):
    y_pred = np.ascontiguousarray(y_pred, dtype=np.float64)  # perturbed in place through reshape(-1)
    loss.forward(y_pred, y_true, **kwargs)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(y_pred, y_true, **kwargs), y_pred, eps=1e-7)
    return relative_error(analytic, numeric)


def _softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z, axis=1):
    s = z - z.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------------------------------------
# the registry and options that do not exist
# ---------------------------------------------------------------------------------------------


def test_registered_losses_and_reduction_is_refused_with_a_config_error():
    assert {
        "mse",
        "mae",
        "huber",
        "cross_entropy",
        "bce_with_logits",
        "masked_cross_entropy",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    } <= set(losses.names())
    # every loss returns the mean; PyTorch's reduction= is not an option, and asking for it is a clear error
    for name in ("mse", "cross_entropy", "bce_with_logits", "binary_crossentropy"):
        with pytest.raises(ConfigError, match=rf"(?s){name}.*reduction"):
            losses.get(name, reduction="sum")


# ---------------------------------------------------------------------------------------------
# cross_entropy (PyTorch's CrossEntropyLoss)
# ---------------------------------------------------------------------------------------------

Z_K = RNG.normal(size=(3, 4, 2, 5))
L_K = RNG.integers(0, 4, (3, 2, 5))
L_K[0, 0, :2] = -100
L_K[1, 1, 3] = -100


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("sample_weighted", [False, True])
def test_cross_entropy_k_dimensional_matches_torch(weighted, smoothing, sample_weighted):
    torch, F = _torch()
    w = W4 if weighted else None
    sw = RNG.uniform(0.2, 2.0, 3) if sample_weighted else None
    kwargs = {} if sw is None else {"sample_weight": sw}
    ours = _ours(CrossEntropy(weight=w, label_smoothing=smoothing), Z_K, L_K, **kwargs)

    def ref(t):
        per = F.cross_entropy(
            t,
            torch.tensor(L_K),
            weight=None if w is None else torch.tensor(w),
            label_smoothing=smoothing,
            reduction="none",
        )
        valid = L_K != -100
        denominator = (W4[np.where(valid, L_K, 0)] * valid).sum() if weighted else valid.sum()
        scale = 1.0 if sw is None else torch.tensor(sw)[:, None, None]
        return (per * scale).sum() / float(denominator)

    _assert_same(ours, _torch_value_and_grad(ref, Z_K))
    if sw is None:  # and the plain reduction="mean"
        _assert_same(
            ours,
            _torch_value_and_grad(
                lambda t: F.cross_entropy(
                    t,
                    torch.tensor(L_K),
                    weight=None if w is None else torch.tensor(w),
                    label_smoothing=smoothing,
                ),
                Z_K,
            ),
        )


@pytest.mark.parametrize("ignore_index", [-1, 7])
def test_cross_entropy_ignore_index_outside_the_classes_matches_torch(ignore_index):
    torch, F = _torch()
    z = RNG.normal(size=(6, 4))
    y = np.array([0, ignore_index, 1, 3, ignore_index, 2])
    ours = _ours(CrossEntropy(ignore_index=ignore_index), z, y)
    ref = _torch_value_and_grad(lambda t: F.cross_entropy(t, torch.tensor(y), ignore_index=ignore_index), z)
    _assert_same(ours, ref)


@pytest.mark.parametrize("ignore_index", [0, 2])
def test_cross_entropy_ignore_index_that_is_a_class_id_matches_torch(ignore_index):
    torch, F = _torch()
    z = RNG.normal(size=(6, 4))
    y = np.array([0, 2, 1, 3, 0, 2])  # every label in [0, C): the plain-labels path is taken
    ours = _ours(CrossEntropy(ignore_index=ignore_index), z, y)
    ref = _torch_value_and_grad(lambda t: F.cross_entropy(t, torch.tensor(y), ignore_index=ignore_index), z)
    _assert_same(ours, ref)
    assert np.all(ours[1][y == ignore_index] == 0)


@pytest.mark.parametrize("ignore_index", [0, 2])
@pytest.mark.parametrize(
    ("weighted", "smoothing", "float_labels"),
    [(True, 0.0, False), (False, 0.3, False), (True, 0.3, True)],
)
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)], ids=str)
def test_cross_entropy_class_id_ignore_index_on_the_general_path_matches_torch(
    ignore_index, weighted, smoothing, float_labels, shape
):
    """Class weights, smoothing, float labels or K dims take the general path; it one-hot encoded an
    ignored label that is a class id (ignore_index in [0, C)) and so counted it (found with bug 1)."""
    torch, F = _torch()
    z = RNG.normal(size=shape)
    y = RNG.integers(0, 4, (shape[0], *shape[2:]))
    y.flat[:2] = ignore_index
    w = W4 if weighted else None
    target = y.astype(np.float64) if float_labels else y
    ours = _ours(CrossEntropy(weight=w, label_smoothing=smoothing, ignore_index=ignore_index), z, target)
    ref = _torch_value_and_grad(
        lambda t: F.cross_entropy(
            t,
            torch.tensor(y),
            weight=None if w is None else torch.tensor(w),
            label_smoothing=smoothing,
            ignore_index=ignore_index,
        ),
        z,
    )
    _assert_same(ours, ref)
    # masked_cross_entropy (which always takes the general path) over every node
    if len(shape) == 2:
        _assert_same(
            _ours(
                MaskedCrossEntropy(weight=w, label_smoothing=smoothing, ignore_index=ignore_index), z, target
            ),
            ref,
        )


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(3, 3, 2), (4, 3, 2, 5)], ids=str)
def test_masked_cross_entropy_k_dimensional_matches_torch_with_the_dropped_samples_ignored(
    shape, weighted, one_hot
):
    """The (N,) mask multiplied (N, C, d...) targets as (N, 1): silently wrong when C == N, NumPy's
    broadcast ValueError otherwise (found with bug 4). It drops all of a sample's positions."""
    torch, F = _torch()
    z = RNG.normal(size=shape)
    y = RNG.integers(0, 3, (shape[0], *shape[2:]))
    mask = np.arange(shape[0]) % 2 == 0
    w = W4[:3] if weighted else None
    target = np.moveaxis(np.eye(3)[y], -1, 1) if one_hot else y
    ours = _ours(MaskedCrossEntropy(mask=mask, weight=w, label_smoothing=0.1), z, target)
    kept = np.where(mask.reshape((-1,) + (1,) * (len(shape) - 2)), y, -100)
    ref = _torch_value_and_grad(
        lambda t: F.cross_entropy(
            t, torch.tensor(kept), weight=None if w is None else torch.tensor(w), label_smoothing=0.1
        ),
        z,
    )
    _assert_same(ours, ref)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_soft_targets_2d_match_torch(smoothing):
    torch, F = _torch()
    z = RNG.normal(size=(5, 4))
    s = RNG.dirichlet(np.ones(4), size=5)
    ours = _ours(CrossEntropy(label_smoothing=smoothing), z, s)
    ref = _torch_value_and_grad(lambda t: F.cross_entropy(t, torch.tensor(s), label_smoothing=smoothing), z)
    _assert_same(ours, ref)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_soft_targets_k_dimensional_match_torch(smoothing):
    torch, F = _torch()
    z = RNG.normal(size=(3, 4, 5))
    s = np.moveaxis(RNG.dirichlet(np.ones(4), size=(3, 5)), -1, 1)
    ref = _torch_value_and_grad(lambda t: F.cross_entropy(t, torch.tensor(s), label_smoothing=smoothing), z)
    _assert_same(_ours(CrossEntropy(label_smoothing=smoothing), z, s), ref)
    _assert_same(_ours(CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing), z, s), ref)


def test_cross_entropy_soft_targets_with_class_weights_follow_the_documented_normaliser():
    """Documented deviation: divided by sum_i sum_c w_c t_ic (PyTorch divides by N); K-dim too."""
    z = RNG.normal(size=(3, 4, 5))
    t = np.moveaxis(RNG.dirichlet(np.ones(4), size=(3, 5)), -1, 1)
    eps = 0.1
    q = t * (1 - eps) + eps / 4
    w = W4.reshape(1, 4, 1)
    expected = -(w * q * _log_softmax(z)).sum() / (w * t).sum()
    loss = CrossEntropy(weight=W4, label_smoothing=eps)
    np.testing.assert_allclose(loss(z, t), expected, rtol=1e-12)
    assert _fd_error(CrossEntropy(weight=W4, label_smoothing=eps), z, t) < 1e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("one_hot", [False, True])
def test_cross_entropy_logits_of_1e4_match_torch(smoothing, weighted, one_hot):
    torch, F = _torch()
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, 1e4], [-1e4, 1e4, 0.0]])
    y = np.array([2, 0, 2, 1])
    w = np.array([1.0, 2.0, 3.0]) if weighted else None
    target = np.eye(3)[y] if one_hot else y
    ours = _ours(CrossEntropy(weight=w, label_smoothing=smoothing), z, target)
    ref = _torch_value_and_grad(
        lambda t: F.cross_entropy(
            t,
            torch.tensor(y),
            weight=None if w is None else torch.tensor(w),
            label_smoothing=smoothing,
        ),
        z,
    )
    _assert_same(ours, ref)


def test_cross_entropy_float_labels_with_ignore_index_match_int_labels_and_torch():
    torch, F = _torch()
    z = RNG.normal(size=(6, 4))
    y = np.array([0, -100, 3, 1, 2, -100])
    ours_float = _ours(CrossEntropy(weight=W4, label_smoothing=0.2), z, y.astype(np.float64))
    ours_int = _ours(CrossEntropy(weight=W4, label_smoothing=0.2), z, y)
    ref = _torch_value_and_grad(
        lambda t: F.cross_entropy(t, torch.tensor(y), weight=torch.tensor(W4), label_smoothing=0.2), z
    )
    _assert_same(ours_float, ref)
    _assert_same(ours_int, ref)
    # a float column (N, 1) of labels is accepted too
    _assert_same(_ours(CrossEntropy(weight=W4, label_smoothing=0.2), z, y[:, None].astype(np.float32)), ref)


def test_all_ignored_batches_give_the_documented_zero_not_torchs_nan():
    z = RNG.normal(size=(2, 3, 4))
    everything_ignored = np.full((2, 4), -100)
    for loss in (
        CrossEntropy(),
        CrossEntropy(weight=[1.0, 2.0, 3.0], label_smoothing=0.2),
        SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100),
    ):
        value, grad = _ours(loss, z, everything_ignored)
        assert value == 0.0
        np.testing.assert_array_equal(grad, np.zeros_like(z))
    probs = _softmax(z)
    value, grad = _ours(SparseCategoricalCrossentropy(ignore_class=1), probs, np.ones((2, 4), dtype=int))
    assert value == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(z))
    value, grad = _ours(MaskedCrossEntropy(), z[:, :, 0], np.array([-1, -100]))
    assert value == 0.0 and not np.any(grad)


# ---------------------------------------------------------------------------------------------
# bce_with_logits (PyTorch's BCEWithLogitsLoss)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["k_dim_pos_weight", "scalar_pos_weight", "extreme_pos_weight", "sample_weight", "column_vs_flat"],
)
def test_bce_with_logits_matches_torch(case):
    torch, F = _torch()
    z = RNG.normal(size=(3, 2, 4)) * 3
    y = RNG.uniform(size=(3, 2, 4))
    pos_weight, sw, target = None, None, y
    if case == "k_dim_pos_weight":
        pos_weight = np.array([0.5, 1.0, 2.0, 4.0])
    elif case == "scalar_pos_weight":
        pos_weight = 3.0
    elif case == "extreme_pos_weight":
        z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
        y = target = np.array([[0.0, 1.0, 0.5], [0.3, 0.7, 1.0]])
        pos_weight = np.array([2.0, 0.5, 1.5])
    elif case == "sample_weight":
        sw = RNG.uniform(0.0, 2.0, 3)
    else:
        z, y = RNG.normal(size=(5, 1)), RNG.integers(0, 2, 5).astype(np.float64)
        target = y  # (N,) targets for (N, 1) logits: reshaped, not broadcast to (N, N)
        y = y[:, None]
    kwargs = {} if sw is None else {"sample_weight": sw}
    ours = _ours(BCEWithLogits(pos_weight=pos_weight), z, target, **kwargs)
    ref = _torch_value_and_grad(
        lambda t: F.binary_cross_entropy_with_logits(
            t,
            torch.tensor(y),
            weight=None if sw is None else torch.tensor(sw).reshape((-1,) + (1,) * (z.ndim - 1)),
            pos_weight=None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64),
        ),
        z,
    )
    _assert_same(ours, ref)


def test_bce_with_logits_single_pos_weight_on_flat_logits_matches_torch():
    torch, F = _torch()
    z = RNG.normal(size=6)
    y = RNG.integers(0, 2, 6).astype(np.float64)
    ours = _ours(BCEWithLogits(pos_weight=[3.0]), z, y)
    ref = _torch_value_and_grad(
        lambda t: F.binary_cross_entropy_with_logits(
            t, torch.tensor(y), pos_weight=torch.tensor([3.0], dtype=torch.float64)
        ),
        z,
    )
    _assert_same(ours, ref)


# ---------------------------------------------------------------------------------------------
# the Keras-named cross-entropies
# ---------------------------------------------------------------------------------------------


def test_binary_crossentropy_on_probabilities_matches_torch_bceloss_inside_the_clip():
    torch, F = _torch()
    p = RNG.uniform(0.01, 0.99, size=(4, 2, 3))
    y = RNG.integers(0, 2, (4, 2, 3)).astype(np.float64)
    sw = RNG.uniform(0.0, 2.0, 4)
    for name in ("binary_crossentropy", "bce", "BCELoss"):
        ours = _ours(losses.get(name), p, y, sample_weight=sw)
        ref = _torch_value_and_grad(
            lambda t: F.binary_cross_entropy(t, torch.tensor(y), weight=torch.tensor(sw)[:, None, None]), p
        )
        _assert_same(ours, ref)


def test_binary_crossentropy_at_probabilities_0_and_1_follows_the_documented_keras_clip():
    """Documented: clipped into [1e-7, 1 - 1e-7] (Keras), gradient 0 outside; PyTorch's BCELoss clamps
    the log at -100 instead, so the alias 'BCELoss' differs from PyTorch here (value 16.1 vs 100)."""
    p = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = losses.get("BCELoss")
    value, grad = _ours(loss, p, y)
    pc = np.clip(p, EPS, 1 - EPS)
    expected = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(value, 2 * -np.log(EPS) / 6, rtol=1e-6)  # two confident mistakes
    np.testing.assert_array_equal(grad, np.zeros_like(p))
    # the fused gradient through the sigmoid is (p - y) / size, finite
    np.testing.assert_allclose(loss.backward_logits(), (p - y) / p.size, rtol=1e-12)


def _keras_categorical(p, t, eps=EPS):
    """Keras's numpy backend: normalise over the class axis (1 here), clip, log, sum over classes."""
    q = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)
    return -(t * np.log(q)).sum(axis=1)


@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_categorical_crossentropy_k_dimensional_matches_the_keras_formula(smoothing):
    p = np.moveaxis(RNG.dirichlet(np.ones(3), size=(4, 2, 5)), -1, 1) * 0.9  # (4, 3, 2, 5), unnormalised
    p[0, :, 0, 0] = [1.0, 0.0, 0.0]  # saturated position
    labels = RNG.integers(0, 3, (4, 2, 5))
    t = np.moveaxis(np.eye(3)[labels], -1, 1)
    sw = RNG.uniform(0.0, 2.0, 4)
    ts = t * (1 - smoothing) + smoothing / 3
    expected = np.sum(_keras_categorical(p, ts) * sw[:, None, None]) / labels.size
    loss = CategoricalCrossentropy(label_smoothing=smoothing)
    np.testing.assert_allclose(loss(p, t, sample_weight=sw), expected, rtol=1e-12)
    interior = np.moveaxis(RNG.dirichlet(np.ones(3), size=(4, 2, 5)), -1, 1)
    assert _fd_error(CategoricalCrossentropy(label_smoothing=smoothing), interior, t, sample_weight=sw) < 1e-6


@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy_ignore_class_with_sample_weight_matches_keras(from_logits):
    """Keras: ignored positions count in neither the sum nor the number the mean divides by."""
    z = RNG.normal(size=(5, 3, 4))
    p = _softmax(z)
    labels = RNG.integers(0, 3, (5, 4))
    labels[0, :3] = 2
    labels[3, 1] = 2
    sw = RNG.uniform(0.1, 2.0, 5)
    valid = labels != 2
    t = np.moveaxis(np.eye(3)[labels], -1, 1)
    per_position = -(t * _log_softmax(z)).sum(axis=1) if from_logits else _keras_categorical(p, t)
    expected = np.sum(per_position * valid * sw[:, None]) / valid.sum()
    loss = SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=2)
    x = z if from_logits else p
    np.testing.assert_allclose(loss(x, labels, sample_weight=sw), expected, rtol=1e-12)
    # float labels are the same labels
    np.testing.assert_allclose(
        SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=2)(
            x, labels.astype(np.float64), sample_weight=sw
        ),
        expected,
        rtol=1e-12,
    )
    assert _fd_error(loss, x, labels, sample_weight=sw) < 1e-6


@pytest.mark.parametrize(
    "name", ["binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"]
)
def test_keras_losses_from_logits_of_1e4_match_torch(name):
    torch, F = _torch()
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]])
    labels = np.array([1, 0, 2])
    if name == "binary_crossentropy":
        y = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
        target, ref_fn = y, lambda t: F.binary_cross_entropy_with_logits(t, torch.tensor(y))
    else:
        target = np.eye(3)[labels] if name == "categorical_crossentropy" else labels
        ref_fn = lambda t: F.cross_entropy(t, torch.tensor(labels))  # noqa: E731
    _assert_same(_ours(losses.get(name, from_logits=True), z, target), _torch_value_and_grad(ref_fn, z))


def test_fused_gradients_with_ignore_class_smoothing_and_sample_weight_match_torch():
    torch, F = _torch()
    z = RNG.normal(size=(4, 3, 5))
    labels = RNG.integers(0, 3, (4, 5))
    labels[0, :2] = 1
    sw = RNG.uniform(0.1, 2.0, 4)
    loss = SparseCategoricalCrossentropy(ignore_class=1)
    loss(_softmax(z), labels, sample_weight=sw)
    valid = labels != 1
    _, ref = _torch_value_and_grad(
        lambda t: (
            (
                F.cross_entropy(t, torch.tensor(np.where(valid, labels, -100)), reduction="none")
                * torch.tensor(sw)[:, None]
            ).sum()
            / float(valid.sum())
        ),
        z,
    )
    np.testing.assert_allclose(loss.backward_logits(), ref, rtol=1e-10, atol=1e-16)
    z1 = RNG.normal(size=(4, 3))
    y1 = RNG.integers(0, 2, (4, 3)).astype(np.float64)
    loss = BinaryCrossentropy(label_smoothing=0.2)
    loss(1 / (1 + np.exp(-z1)), y1, sample_weight=sw)
    _, ref = _torch_value_and_grad(
        lambda t: (
            F.binary_cross_entropy_with_logits(t, torch.tensor(y1 * 0.8 + 0.1), reduction="none")
            * torch.tensor(sw)[:, None]
        ).mean(),
        z1,
    )
    np.testing.assert_allclose(loss.backward_logits(), ref, rtol=1e-10, atol=1e-16)


# ---------------------------------------------------------------------------------------------
# regression losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [MSE, MAE, lambda: Huber(), lambda: Huber(delta=0.5), lambda: Huber(delta=2.0)],
    ids=["mse", "mae", "huber1", "huber0.5", "huber2"],
)
def test_regression_losses_k_dimensional_with_kinks_and_sample_weight_match_torch(make):
    torch, F = _torch()
    x = RNG.normal(size=(4, 2, 3)) * 2
    t = x - RNG.uniform(-3, 3, size=x.shape)
    t[0, 0, 0] = x[0, 0, 0]  # residual exactly 0
    loss = make()
    delta = getattr(loss, "delta", None)
    if delta is not None:
        t[1, 0, 0] = x[1, 0, 0] - delta  # residual exactly at the kink
        t[1, 1, 1] = x[1, 1, 1] + delta
    sw = RNG.uniform(0.0, 2.0, 4)
    fn = {MSE: F.mse_loss, MAE: F.l1_loss}.get(type(loss))
    if fn is None:
        fn = lambda a, b, reduction: F.huber_loss(a, b, delta=delta, reduction=reduction)  # noqa: E731
    ours = _ours(loss, x, t, sample_weight=sw)
    ref = _torch_value_and_grad(
        lambda a: (fn(a, torch.tensor(t), reduction="none") * torch.tensor(sw)[:, None, None]).mean(), x
    )
    _assert_same(ours, ref)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce_with_logits", "binary_crossentropy"])
def test_column_against_flat_targets_is_reshaped_not_broadcast_to_n_by_n(name):
    """PyTorch warns and broadcasts (N, 1) against (N,) to (N, N); ours reshapes, as documented (and as
    Keras squeezes)."""
    p = RNG.uniform(0.05, 0.95, size=(5, 1))
    y = RNG.integers(0, 2, 5).astype(np.float64)
    flat = losses.get(name)(p[:, 0], y)
    a, b = losses.get(name), losses.get(name)
    np.testing.assert_allclose(a(p, y), flat, rtol=1e-14)
    np.testing.assert_allclose(b(p[:, 0], y[:, None]), flat, rtol=1e-14)
    assert a.backward().shape == (5, 1) and b.backward().shape == (5,)
    np.testing.assert_allclose(a.backward()[:, 0], b.backward(), rtol=1e-14)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce_with_logits", "binary_crossentropy"])
@pytest.mark.parametrize(
    ("pred_shape", "true_shape"), [((5, 1), (1, 5)), ((5, 2), (5,)), ((5,), (5, 2)), ((4, 3), (3,))]
)
def test_wrong_target_shapes_raise_shape_error_naming_loss_and_both_shapes(name, pred_shape, true_shape):
    loss = losses.get(name)
    owner = type(loss).__name__
    with pytest.raises(ShapeError, match=rf"{owner}.*{_shape_re(pred_shape)}.*{_shape_re(true_shape)}"):
        loss(np.full(pred_shape, 0.5), np.zeros(true_shape))


def _shape_re(shape):
    return "\\(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + "\\)"


def test_cross_entropies_wrong_label_shapes_raise_shape_error_naming_loss_and_shapes():
    z = RNG.normal(size=(2, 3, 4, 5))
    with pytest.raises(ShapeError, match=r"CrossEntropy.*\(2, 4, 5\).*\(2, 5, 4\)"):
        CrossEntropy()(z, np.zeros((2, 5, 4), dtype=int))
    with pytest.raises(ShapeError, match=r"SparseCategoricalCrossentropy.*\(2, 4, 5\).*\(2, 4\)"):
        SparseCategoricalCrossentropy(from_logits=True)(z, np.zeros((2, 4), dtype=int))
    with pytest.raises(ShapeError, match=r"CategoricalCrossentropy.*\(2, 3, 4, 5\).*\(2, 4, 5, 3\)"):
        CategoricalCrossentropy()(_softmax(z), np.zeros((2, 4, 5, 3)))


# ---------------------------------------------------------------------------------------------
# sample_weight: Keras's mean, not renormalised, for every loss
# ---------------------------------------------------------------------------------------------

_Z = RNG.normal(size=(6, 4))
_P = _softmax(_Z)
_LAB = np.array([0, 3, 1, 1, 2, 3])
_BIN = RNG.integers(0, 2, (6, 4)).astype(np.float64)
SAMPLE_WEIGHT_CASES = {
    "mse": (MSE, _Z, _BIN),
    "mae": (MAE, _Z, _BIN),
    "huber": (lambda: Huber(delta=0.7), _Z, _BIN),
    "cross_entropy": (lambda: CrossEntropy(label_smoothing=0.1), _Z, _LAB),
    "cross_entropy_one_hot": (CrossEntropy, _Z, np.eye(4)[_LAB]),
    "masked_cross_entropy": (MaskedCrossEntropy, _Z, _LAB),
    "bce_with_logits": (lambda: BCEWithLogits(pos_weight=[1.0, 2.0, 0.5, 3.0]), _Z, _BIN),
    "binary_crossentropy": (lambda: BinaryCrossentropy(label_smoothing=0.1), 1 / (1 + np.exp(-_Z)), _BIN),
    "binary_crossentropy_logits": (lambda: BinaryCrossentropy(from_logits=True), _Z, _BIN),
    "categorical_crossentropy": (CategoricalCrossentropy, _P, np.eye(4)[_LAB]),
    "categorical_crossentropy_logits": (
        lambda: CategoricalCrossentropy(from_logits=True),
        _Z,
        np.eye(4)[_LAB],
    ),
    "sparse_categorical_crossentropy": (SparseCategoricalCrossentropy, _P, _LAB),
    "sparse_categorical_crossentropy_logits": (
        lambda: SparseCategoricalCrossentropy(from_logits=True),
        _Z,
        _LAB,
    ),
}


@pytest.mark.parametrize("case", sorted(SAMPLE_WEIGHT_CASES))
def test_sample_weight_is_the_keras_mean_of_weighted_sample_losses(case):
    make, x, y = SAMPLE_WEIGHT_CASES[case]
    sw = np.array([0.0, 1.0, 2.5, 0.5, 1.0, 3.0])
    per_sample = np.array([make()(x[i : i + 1], y[i : i + 1]) for i in range(6)])
    loss = make()
    value = loss(x, y, sample_weight=sw)
    np.testing.assert_allclose(value, np.mean(sw * per_sample), rtol=1e-12)  # divided by N, not sum(sw)
    grad = loss.backward()
    plain = make()
    plain(x, y)
    np.testing.assert_allclose(grad, plain.backward() * sw[:, None], rtol=1e-12, atol=1e-18)
    # (N, 1) column of weights is the same; a wrong length is a ShapeError
    np.testing.assert_allclose(make()(x, y, sample_weight=sw[:, None]), value, rtol=1e-15)
    with pytest.raises(ShapeError, match=r"sample_weight.*\(6,\).*\(5,\)"):
        make()(x, y, sample_weight=sw[:5])


@pytest.mark.parametrize(
    "case",
    [
        "binary_crossentropy_logits",
        "categorical_crossentropy_logits",
        "sparse_categorical_crossentropy_logits",
    ],
)
def test_keras_losses_from_logits_name_themselves_in_sample_weight_errors(case):
    make, x, y = SAMPLE_WEIGHT_CASES[case]
    loss = make()
    with pytest.raises(ShapeError, match=rf"^{type(loss).__name__}: sample_weight.*\(6,\).*\(5,\)"):
        loss(x, y, sample_weight=np.ones(5))


# ---------------------------------------------------------------------------------------------
# metrics: accuracy, top-k, regression
# ---------------------------------------------------------------------------------------------

N = 300
UNEVEN = [slice(0, 1), slice(1, 50), slice(50, 51), slice(51, 250), slice(250, N)]
Y2 = RNG.integers(0, 2, N)
P2 = np.clip(Y2 * 0.3 + 0.35 + RNG.normal(scale=0.25, size=N), 0.0, 1.0)
P2[:5] = 0.5  # exactly at the threshold: not positive (y_pred > threshold)
Y4 = RNG.integers(0, 4, N)
S4 = RNG.normal(size=(N, 4)) + np.eye(4)[Y4]
SW = RNG.uniform(0.0, 3.0, N)
SW[:3] = 0.0


def _batches(metric, y_pred, y_true, sw=None, batches=UNEVEN):
    metric.reset_state()
    for b in batches:
        metric.update_state(y_true[b], y_pred[b], None if sw is None else sw[b])
    return metric.result()


@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy_over_uneven_weighted_batches_equals_sklearn(weighted):
    skm = _skm()
    sw = SW if weighted else None
    ref = skm.accuracy_score(Y2, (P2 > 0.5).astype(int), sample_weight=sw)
    np.testing.assert_allclose(_batches(Accuracy(), P2, Y2, sw), ref, rtol=1e-12)
    np.testing.assert_allclose(_batches(Accuracy(), P2[:, None], Y2[:, None], sw), ref, rtol=1e-12)
    ref = skm.accuracy_score(Y2, (P2 > 0.6).astype(int), sample_weight=sw)
    np.testing.assert_allclose(_batches(Accuracy(threshold=0.6), P2, Y2, sw), ref, rtol=1e-12)
    logits = np.log(np.clip(P2, 1e-9, 1)) - np.log(np.clip(1 - P2, 1e-9, 1))
    bound = Accuracy()
    bound.bind_output("logits", "sigmoid")
    ref = skm.accuracy_score(Y2, (logits > 0).astype(int), sample_weight=sw)
    np.testing.assert_allclose(_batches(bound, logits, Y2, sw), ref, rtol=1e-12)
    ref = skm.accuracy_score(Y4, S4.argmax(1), sample_weight=sw)
    np.testing.assert_allclose(_batches(Accuracy(), S4, Y4, sw), ref, rtol=1e-12)
    np.testing.assert_allclose(_batches(Accuracy(), S4, np.eye(4)[Y4], sw), ref, rtol=1e-12)
    np.testing.assert_allclose(_batches(Accuracy(), S4, Y4.astype(np.float64), sw), ref, rtol=1e-12)


def test_accuracy_k_dimensional_sample_weight_spreads_over_positions():
    scores = RNG.normal(size=(7, 3, 4))
    labels = RNG.integers(0, 3, (7, 4))
    sw = RNG.uniform(0.0, 2.0, 7)
    correct = scores.argmax(axis=1) == labels
    expected = np.sum(correct * sw[:, None]) / (sw.sum() * 4)  # Keras: weight broadcast per position
    batches = [slice(0, 2), slice(2, 3), slice(3, 7)]
    np.testing.assert_allclose(_batches(Accuracy(), scores, labels, sw, batches), expected, rtol=1e-12)


def test_top_k_accuracy_ties_are_resolved_in_favour_and_equal_sklearn_without_ties():
    skm = _skm()
    scores = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 2.0], [3.0, 2.0, 2.0], [0.0, 0.0, 5.0]])
    labels = np.array([2, 0, 1, 0])
    # right when fewer than k classes score strictly higher: row 0 for k=1 (a 3-way tie), rows 2 and
    # 3 from k=2, row 1 (two classes higher) only at k=3
    assert TopKAccuracy(k=1)(scores, labels) == 0.25
    assert TopKAccuracy(k=2)(scores, labels) == 0.75
    assert TopKAccuracy(k=3)(scores, labels) == 1.0
    for k in (1, 2, 3):
        ref = skm.top_k_accuracy_score(Y4, S4, k=k, labels=range(4), sample_weight=SW)
        np.testing.assert_allclose(_batches(TopKAccuracy(k=k), S4, Y4, SW), ref, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics_over_uneven_batches_equal_sklearn(weighted):
    skm = _skm()
    pred = RNG.normal(size=(N, 3))
    true = RNG.normal(size=(N, 3))
    sw = SW if weighted else None
    for metric, ref_fn in (
        (MeanAbsoluteError(), skm.mean_absolute_error),
        (MeanSquaredError(), skm.mean_squared_error),
    ):
        np.testing.assert_allclose(
            _batches(metric, pred, true, sw), ref_fn(true, pred, sample_weight=sw), rtol=1e-12
        )
    # (N, 1) predictions against (N,) targets: reshaped, not broadcast
    np.testing.assert_allclose(
        _batches(MeanSquaredError(), pred[:, :1], true[:, 0], sw),
        skm.mean_squared_error(true[:, 0], pred[:, 0], sample_weight=sw),
        rtol=1e-12,
    )
    with pytest.raises(ShapeError, match=r"MeanAbsoluteError.*\(4, 1\).*\(1, 4\)"):
        MeanAbsoluteError()(np.zeros((4, 1)), np.zeros((1, 4)))


# ---------------------------------------------------------------------------------------------
# precision / recall / F1 / confusion matrix
# ---------------------------------------------------------------------------------------------

ZERO_DIVISION_CASES = {
    "nothing_predicted_positive": (np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 0])),
    "no_true_positive": (np.array([0.9, 0.2, 0.7, 0.4]), np.array([0, 0, 0, 0])),
    "all_true_negatives": (np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 0, 0])),
    "all_true_positives": (np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 1])),
}


@pytest.mark.parametrize("case", sorted(ZERO_DIVISION_CASES))
@pytest.mark.parametrize("average", ["binary", "macro", "micro", "weighted", None])
def test_precision_recall_f1_zero_division_cases_equal_sklearn(case, average):
    skm = _skm()
    scores, y = ZERO_DIVISION_CASES[case]
    y_hat = (scores > 0.5).astype(int)
    for cls, ref_fn in (
        (Precision, skm.precision_score),
        (Recall, skm.recall_score),
        (F1Score, skm.f1_score),
    ):
        metric = cls(average=average)
        metric.update_state(y[:1], scores[:1])
        metric.update_state(y[1:], scores[1:])
        ref = ref_fn(y, y_hat, average=average, zero_division=0)
        if average is None:  # sklearn reports only the labels present in y or y_hat
            labels = np.unique(np.r_[y, y_hat])
            np.testing.assert_allclose(metric.result()[labels], ref, atol=1e-12)
        else:
            np.testing.assert_allclose(metric.result(), ref, atol=1e-12)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_scores_k_dimensional_and_one_hot_targets_equal_sklearn(average):
    skm = _skm()
    scores = RNG.normal(size=(40, 3, 5))
    labels = RNG.integers(0, 3, (40, 5))
    sw = RNG.uniform(0.0, 2.0, 40)
    flat_true, flat_pred, flat_w = labels.reshape(-1), scores.argmax(1).reshape(-1), np.repeat(sw, 5)
    batches = [slice(0, 3), slice(3, 4), slice(4, 40)]
    one_hot = np.moveaxis(np.eye(3)[labels], -1, 1)
    for cls, ref_fn in (
        (Precision, skm.precision_score),
        (Recall, skm.recall_score),
        (F1Score, skm.f1_score),
    ):
        ref = ref_fn(flat_true, flat_pred, average=average, sample_weight=flat_w, zero_division=0)
        np.testing.assert_allclose(
            _batches(cls(average=average), scores, labels, sw, batches), ref, atol=1e-12
        )
        np.testing.assert_allclose(
            _batches(cls(average=average), scores, one_hot, sw, batches), ref, atol=1e-12
        )
    cm = _batches(ConfusionMatrix(), scores, labels, sw, batches)
    ref = skm.confusion_matrix(flat_true, flat_pred, labels=range(3), sample_weight=flat_w)
    np.testing.assert_allclose(cm, ref, rtol=1e-12)


def test_confusion_matrix_binary_threshold_equals_sklearn():
    skm = _skm()
    cm = _batches(ConfusionMatrix(threshold=0.6), P2, Y2, SW)
    ref = skm.confusion_matrix(Y2, (P2 > 0.6).astype(int), labels=[0, 1], sample_weight=SW)
    np.testing.assert_allclose(cm, ref, rtol=1e-12)


def test_confusion_matrix_refused_batch_leaves_the_state_unchanged():
    cm = ConfusionMatrix(num_classes=4)
    with pytest.raises(ShapeError, match=r"num_classes=4.*3 classes"):
        cm.update_state(np.array([0, 1, 2]), np.eye(3))
    np.testing.assert_array_equal(cm.result(), np.zeros((4, 4)))


# ---------------------------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------------------------


def _keras_auc(scores, y, w, num_thresholds, curve):
    """Keras's AUC(summation_method='interpolation'), counts at each threshold by brute force."""
    inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    thresholds = [0.0 - EPS, *inner, 1.0 + EPS]
    pos = y > 0.5
    tp = np.array([np.sum(w * (pos & (scores > t))) for t in thresholds])
    fp = np.array([np.sum(w * (~pos & (scores > t))) for t in thresholds])
    fn = np.array([np.sum(w * (pos & (scores <= t))) for t in thresholds])
    tn = np.array([np.sum(w * (~pos & (scores <= t))) for t in thresholds])
    if curve == "ROC":
        tpr, fpr = tp / (tp + fn), fp / (fp + tn)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
    total = 0.0
    for i in range(num_thresholds - 1):
        dtp = tp[i] - tp[i + 1]
        p_i, p_next = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
        dp = p_i - p_next
        slope = dtp / dp if dp > 0 else 0.0
        intercept = tp[i + 1] - slope * p_next
        ratio = p_i / p_next if (p_i > 0 and p_next > 0) else 1.0
        den = tp[i + 1] + fn[i + 1]
        total += slope * (dtp + intercept * np.log(ratio)) / den if den > 0 else 0.0
    return total


@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("num_thresholds", [3, 7, 200])
def test_auc_thresholded_equals_keras_including_scores_on_the_thresholds(curve, num_thresholds):
    scores = P2.copy()
    grid = np.array([0.0, 1.0] + [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)])
    scores[5 : 5 + grid.size] = grid  # exactly on a threshold: not above it
    ref = _keras_auc(scores, Y2, SW, num_thresholds, curve)
    got = _batches(AUC(curve=curve, num_thresholds=num_thresholds), scores, Y2, SW)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("curve", ["ROC", "PR"])
def test_auc_exact_with_ties_across_batches_equals_sklearn(curve):
    skm = _skm()
    scores = np.round(P2, 1)  # heavy ties, split over batch boundaries
    ref_fn = skm.roc_auc_score if curve == "ROC" else skm.average_precision_score
    got = _batches(AUC(curve=curve, num_thresholds=None), scores, Y2, SW)
    np.testing.assert_allclose(got, ref_fn(Y2, scores, sample_weight=SW), rtol=1e-12)
    one_hot = np.eye(4)[Y4]
    probs = _softmax(S4)
    got = _batches(AUC(curve=curve, num_thresholds=None), np.round(probs, 2), one_hot, SW)
    ref = ref_fn(one_hot, np.round(probs, 2), average="micro", sample_weight=SW)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("num_thresholds", [None, 200])
def test_auc_with_a_single_class_present(num_thresholds):
    """Documented: ROC is nan until both a positive and a negative were seen. PR needs positives only:
    with only positives it is 1.0, scikit-learn's average_precision_score (the docstring's "both" is
    about ROC)."""
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    for y in (np.ones(4), np.zeros(4)):
        assert np.isnan(_batches(AUC(num_thresholds=num_thresholds), scores, y, batches=[slice(0, 4)]))
    pr = AUC(curve="PR", num_thresholds=num_thresholds)
    assert _batches(pr, scores, np.ones(4), batches=[slice(0, 2), slice(2, 4)]) == pytest.approx(
        1.0, abs=1e-12
    )
    assert np.isnan(_batches(pr, scores, np.zeros(4), batches=[slice(0, 4)]))


EXTREME_LOGITS = np.array([-1e4, -3.0, 0.0, 2.0, 1e4, -1e4])
EXTREME_Y = np.array([0, 0, 1, 1, 1, 1])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_auc_on_extreme_logits_is_finite_and_equal_to_the_probabilities():
    probs = np.array([0.0, 1 / (1 + np.exp(3.0)), 0.5, 1 / (1 + np.exp(-2.0)), 1.0, 0.0])
    for nt in (None, 200):
        on_logits = AUC(num_thresholds=nt, from_logits=True)
        on_logits.update_state(EXTREME_Y, EXTREME_LOGITS)
        on_probs = AUC(num_thresholds=nt)
        on_probs.update_state(EXTREME_Y, probs)
        assert np.isfinite(on_logits.result())
        np.testing.assert_allclose(on_logits.result(), on_probs.result(), rtol=1e-12)


@pytest.mark.parametrize("link", ["sigmoid", None])
def test_auc_on_extreme_logits_emits_no_overflow_warning(link):
    auc = AUC(num_thresholds=None, from_logits=link is None)
    if link is not None:
        auc.bind_output("logits", link)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        auc.update_state(EXTREME_Y, EXTREME_LOGITS[:, None])
        auc.update_state(np.eye(2)[EXTREME_Y], np.c_[EXTREME_LOGITS, -EXTREME_LOGITS])
    assert np.isfinite(auc.result())


@pytest.mark.parametrize(
    ("pred_shape", "true_shape"), [((6,), (3, 2)), ((4, 1), (4, 2)), ((6, 1), (1, 6))], ids=str
)
def test_auc_wrong_target_shape_is_a_shape_error_naming_both_shapes(pred_shape, true_shape):
    auc = AUC(num_thresholds=None)
    with pytest.raises(ShapeError, match=rf"AUC.*{_shape_re(pred_shape)}.*{_shape_re(true_shape)}"):
        auc.update_state(RNG.integers(0, 2, true_shape), RNG.uniform(size=pred_shape))


# ---------------------------------------------------------------------------------------------
# the stateful protocol: batches == their concatenation
# ---------------------------------------------------------------------------------------------

STATEFUL_CASES = {
    "accuracy_binary": (Accuracy, P2, Y2),
    "accuracy_multiclass": (Accuracy, S4, Y4),
    "top_k": (lambda: TopKAccuracy(k=2), S4, Y4),
    "mae": (MeanAbsoluteError, S4, np.eye(4)[Y4]),
    "mse": (MeanSquaredError, S4, np.eye(4)[Y4]),
    "precision_binary": (Precision, P2, Y2),
    "recall_macro": (lambda: Recall(average="macro"), S4, Y4),
    "f1_weighted": (lambda: F1Score(average="weighted"), S4, Y4),
    "f1_per_class": (lambda: F1Score(average=None), S4, Y4),
    "confusion_matrix": (ConfusionMatrix, S4, Y4),
    "auc_roc": (AUC, P2, Y2),
    "auc_pr_exact": (lambda: AUC(curve="PR", num_thresholds=None), P2, Y2),
}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", sorted(STATEFUL_CASES))
def test_metric_over_uneven_batches_equals_metric_over_their_concatenation(case, weighted):
    make, y_pred, y_true = STATEFUL_CASES[case]
    sw = SW if weighted else None
    whole = make()
    whole.update(y_pred, y_true, sample_weight=sw)  # the loop's argument order
    metric = make()
    got = _batches(metric, y_pred, y_true, sw)
    np.testing.assert_allclose(got, whole.result(), rtol=1e-12)
    metric.reset()
    again = _batches(metric, y_pred, y_true, sw, batches=UNEVEN[::-1])  # order does not matter either
    np.testing.assert_allclose(again, whole.result(), rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", ["accuracy_binary", "accuracy_multiclass", "top_k", "mae", "mse"])
def test_an_empty_batch_changes_no_running_metric(case, weighted):
    make, y_pred, y_true = STATEFUL_CASES[case]
    sw = SW if weighted else None
    expected = _batches(make(), y_pred, y_true, sw)
    with_empty = _batches(make(), y_pred, y_true, sw, batches=[slice(0, 0), *UNEVEN])
    np.testing.assert_allclose(with_empty, expected, rtol=1e-12)


def test_an_empty_batch_changes_no_counting_metric():
    for case in ("precision_binary", "recall_macro", "confusion_matrix", "auc_roc", "auc_pr_exact"):
        make, y_pred, y_true = STATEFUL_CASES[case]
        expected = _batches(make(), y_pred, y_true, SW)
        with_empty = _batches(make(), y_pred, y_true, SW, batches=[slice(0, 0), *UNEVEN])
        np.testing.assert_allclose(with_empty, expected, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # the user's function on 0 samples
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("per_sample", [False, True])
def test_an_empty_batch_changes_no_function_metric(per_sample, weighted):
    """A plain function as a metric: an empty batch used to give nan (a number) or a ValueError (an
    array, reshape(0, -1)); found with bug 2."""

    def abs_error(y_true, y_pred):
        error = np.abs(y_pred - y_true)
        return error if per_sample else error.mean()

    sw = SW if weighted else None
    expected = _batches(metrics.get(abs_error), S4, np.eye(4)[Y4], sw)
    with_empty = _batches(metrics.get(abs_error), S4, np.eye(4)[Y4], sw, batches=[*UNEVEN, slice(0, 0)])
    assert np.isfinite(expected)
    np.testing.assert_allclose(with_empty, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["precision", "recall", "f1_score", "auc", "confusion_matrix"])
def test_calling_a_counting_metric_gives_the_batch_value_and_leaves_the_state(name):
    metric = metrics.get(name)
    metric.update_state(Y2[:100], P2[:100])
    before = metric.result()
    fresh = metrics.get(name)
    fresh.update_state(Y2[100:], P2[100:])
    np.testing.assert_allclose(metric(P2[100:], Y2[100:]), fresh.result(), rtol=1e-12)
    np.testing.assert_allclose(metric.result(), before, rtol=1e-12)


def test_evaluate_over_uneven_weighted_batches_equals_the_metrics_of_the_whole_set(float64):
    """Through the training loop: the epoch value of each metric (and the loss) is that of all samples."""
    skm = _skm()
    from framework import Sequential
    from framework.layers import Linear

    x = RNG.normal(size=(53, 4))
    y = RNG.integers(0, 3, 53)
    sw = RNG.uniform(0.0, 2.0, 53)
    model = Sequential([Linear(4, 3)])
    model.compile(
        loss="cross_entropy",
        weighted_metrics=["accuracy", F1Score(average="macro"), AUC(num_thresholds=None)],
    )
    result = model.evaluate(x, y, batch_size=10, sample_weight=sw)  # batches 10, ..., 10, 3
    logits = model.predict(x)
    y_hat = logits.argmax(1)
    np.testing.assert_allclose(result["loss"], CrossEntropy()(logits, y, sample_weight=sw), rtol=1e-12)
    np.testing.assert_allclose(result["accuracy"], skm.accuracy_score(y, y_hat, sample_weight=sw), rtol=1e-12)
    np.testing.assert_allclose(
        result["f1_score"], skm.f1_score(y, y_hat, average="macro", sample_weight=sw), rtol=1e-12
    )
    ref = skm.roc_auc_score(np.eye(3)[y], _softmax(logits), average="micro", sample_weight=sw)
    np.testing.assert_allclose(result["auc"], ref, rtol=1e-12)
