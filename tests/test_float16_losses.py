"""float16 predictions: every loss computes in float32, every metric accumulates in float32 or wider.

PyTorch's autocast and Keras's ``mixed_float16`` policy compute losses in float32: a
float16 model's loss would otherwise overflow (float16 ends at 65504, so an MSE of
errors above 256 is inf) or round away (a cross-entropy of 6e-6 is 0 in float16).
The reference here is the same loss on the same values given as float32: the value
must be equal, and the gradient handed back to the model must be float16 and equal
to the float32 gradient cast to float16. float32 and float64 inputs must take the
unchanged path.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin a bug whose fix lies
outside the losses and metrics.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest

import framework.base.loss as loss_base
from framework import Sequential, losses, metrics
from framework.base.loss import COMPUTE_DTYPE, Loss, widen
from framework.base.metric import FunctionMetric, Metric
from framework.base.mixed_precision import LossScaler
from framework.layers import Linear
from framework.optimizers import SGD
from framework.runtime.dtype import default_dtype
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

F16 = np.float16


def _f16(values):
    return np.asarray(values, dtype=F16)


# =============================================================================================
# the cases: (registered name, id, factory, float16 y_pred, y_true, forward kwargs)
# each one overflows float16 or rounds its value away when computed in float16
# =============================================================================================

ONE_HOT_2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
LOSS_CASES = [
    # 300^2 = 90000 > 65504
    ("mse", "square_overflows", MSE, _f16([[300.0], [-250.0], [10.0], [0.0]]), np.zeros((4, 1)), {}),
    # the float64 target 0.1 rounds to float16's 0.1: the residual 2.4e-5 would be 0
    ("mse", "target_rounds", MSE, _f16([[0.1], [0.2]]), np.array([0.1, 0.2]), {}),
    # the residual 120000 > 65504
    ("mae", "residual_overflows", MAE, _f16([[60000.0], [-60000.0]]), np.array([[-60000.0], [60000.0]]), {}),
    ("mae", "weighted", MAE, _f16([[3.0, 4.0], [1.0, 2.0]]), np.zeros((2, 2)), {"sample_weight": [30000, 5]}),
    # 0.5 * 500^2 = 125000 > 65504
    ("huber", "quadratic_overflows", lambda: Huber(delta=1000.0), _f16([[500.0], [-700.0]]), np.zeros(2), {}),
    ("huber", "residual_overflows", Huber, _f16([[60000.0], [0.0]]), np.array([-60000.0, 0.5]), {}),
    # log(1 + 6e-6) is 0 in float16: the loss 6e-6 would vanish
    ("cross_entropy", "tiny_loss", CrossEntropy, _f16([[12.0, 0.0], [0.0, 12.0]]), np.array([0, 1]), {}),
    # the class weight 70000 is inf in float16
    (
        "cross_entropy",
        "class_weight_overflows",
        lambda: CrossEntropy(weight=[70000.0, 1.0], label_smoothing=0.1),
        _f16([[1.0, 3.0], [2.0, -1.0], [0.5, 0.5]]),
        np.array([0, 1, 0]),
        {},
    ),
    (
        "cross_entropy",
        "soft_targets",
        CrossEntropy,
        _f16([[12.0, 0.0], [0.0, 12.0], [12.0, 0.0]]),
        ONE_HOT_2,
        {"sample_weight": [1.0, 2.0, 0.5]},
    ),
    (
        "masked_cross_entropy",
        "class_weight_overflows",
        lambda: MaskedCrossEntropy(mask=[True, False, True], weight=[70000.0, 1.0]),
        _f16([[1.0, 3.0], [2.0, -1.0], [0.5, 0.5]]),
        np.array([0, 1, 1]),
        {},
    ),
    (
        "masked_cross_entropy",
        "tiny_loss",
        MaskedCrossEntropy,
        _f16([[12.0, 0.0], [0.0, 12.0], [3.0, 0.0]]),
        np.array([0, 1, -1]),
        {"mask": [True, True, False]},
    ),
    # 3 * softplus(30000) = 90000 > 65504
    (
        "bce_with_logits",
        "pos_weight_overflows",
        lambda: BCEWithLogits(pos_weight=3.0),
        _f16([[-30000.0], [2.0]]),
        np.array([1.0, 0.0]),
        {},
    ),
    # log1p(exp(-18)) = 1.5e-8: exp(-18) is below float16's smallest subnormal (6e-8)
    ("bce_with_logits", "tiny_loss", BCEWithLogits, _f16([[18.0, -18.0]]), np.array([[1.0, 0.0]]), {}),
    # 1 - 1e-7 is 1.0 in float16: the clip would let log1p(-1) = -inf through
    (
        "binary_crossentropy",
        "clip_rounds_to_one",
        BinaryCrossentropy,
        _f16([[1.0], [0.0], [0.3]]),
        np.array([0.0, 1.0, 1.0]),
        {},
    ),
    (
        "binary_crossentropy",
        "smoothed_clip",
        lambda: BinaryCrossentropy(label_smoothing=0.1),
        _f16([[1.0, 0.999], [0.001, 0.5]]),
        np.array([[1.0, 0.0], [0.0, 1.0]]),
        {"sample_weight": [2.0, 0.5]},
    ),
    (
        "binary_crossentropy",
        "from_logits_tiny",
        lambda: BinaryCrossentropy(from_logits=True),
        _f16([[18.0, -18.0]]),
        np.array([[1.0, 0.0]]),
        {},
    ),
    # 1e-7 rounds to 1.19e-7 in float16: -log of a zero probability would be 15.94, not 16.12
    (
        "categorical_crossentropy",
        "clip_rounds",
        CategoricalCrossentropy,
        _f16([[0.0, 1.0], [0.5, 0.5], [0.999, 0.001]]),
        ONE_HOT_2,
        {},
    ),
    (
        "categorical_crossentropy",
        "from_logits_tiny",
        lambda: CategoricalCrossentropy(from_logits=True),
        _f16([[12.0, 0.0], [0.0, 12.0], [12.0, 0.0]]),
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        {},
    ),
    (
        "sparse_categorical_crossentropy",
        "clip_rounds",
        lambda: SparseCategoricalCrossentropy(ignore_class=2),
        _f16([[0.0, 0.7, 0.3], [0.5, 0.25, 0.25], [0.999, 0.0, 0.001]]),
        np.array([0, 2, 1]),
        {},
    ),
    (
        "sparse_categorical_crossentropy",
        "from_logits_tiny",
        lambda: SparseCategoricalCrossentropy(from_logits=True),
        _f16([[12.0, 0.0], [0.0, 12.0]]),
        np.array([0, 1]),
        {},
    ),
]
IDS = [f"{name}-{label}" for name, label, *_ in LOSS_CASES]


def _run(factory, y_pred, y_true, kwargs, logits=False):
    loss = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the float32 path warns of nothing
        value = loss(y_pred, y_true, **kwargs)
        grad = loss.backward_logits() if logits else loss.backward()
    return loss, value, grad


def test_every_registered_loss_has_a_float16_case():
    assert {name for name, *_ in LOSS_CASES} == set(losses.names())


@pytest.mark.parametrize("name, label, factory, y_pred, y_true, kwargs", LOSS_CASES, ids=IDS)
def test_float16_loss_and_gradient_equal_the_float32_ones(name, label, factory, y_pred, y_true, kwargs):
    assert type(factory()) is type(losses.get(name))
    _, value16, grad16 = _run(factory, y_pred, y_true, kwargs)
    _, value32, grad32 = _run(factory, y_pred.astype(np.float32), y_true, kwargs)
    assert np.isfinite(value16)
    assert value16 == value32
    assert grad16.dtype == F16 and grad16.shape == y_pred.shape
    assert grad32.dtype == np.float32
    assert np.array_equal(grad16, grad32.astype(F16))


@pytest.mark.parametrize("name, label, factory, y_pred, y_true, kwargs", LOSS_CASES, ids=IDS)
def test_each_case_goes_wrong_in_float16_arithmetic(
    monkeypatch, name, label, factory, y_pred, y_true, kwargs
):
    """Each case bites: with the float32 rule switched off, its value is off by 1 % or more (or inf / NaN)."""
    _, value32, _ = _run(factory, y_pred.astype(np.float32), y_true, kwargs)
    monkeypatch.setattr(loss_base, "_narrow_dtype", lambda y_pred: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = factory()
        value16 = loss(y_pred, y_true, **kwargs)
        assert loss.backward().dtype == F16
    assert not np.isfinite(value16) or abs(value16 - value32) > 1e-2 * abs(value32)


def _probability_cases():
    return [case for case in LOSS_CASES if case[2]().expects == "probabilities"]


@pytest.mark.parametrize(
    "name, label, factory, y_pred, y_true, kwargs",
    _probability_cases(),
    ids=[f"{c[0]}-{c[1]}" for c in _probability_cases()],
)
def test_float16_fused_gradient_equals_the_float32_one(name, label, factory, y_pred, y_true, kwargs):
    _, _, grad16 = _run(factory, y_pred, y_true, kwargs, logits=True)
    _, _, grad32 = _run(factory, y_pred.astype(np.float32), y_true, kwargs, logits=True)
    assert grad16.dtype == F16
    assert np.array_equal(grad16, grad32.astype(F16))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, label, factory, y_pred, y_true, kwargs", LOSS_CASES, ids=IDS)
def test_float32_and_float64_take_the_unwrapped_path(dtype, name, label, factory, y_pred, y_true, kwargs):
    """The precision wrapper adds nothing: value and gradient are bit for bit the subclass's own."""
    cls = type(factory())
    y = y_pred.astype(dtype)
    wrapped, value, grad = _run(factory, y, y_true, kwargs)
    raw = factory()
    raw_value = cls.forward.__wrapped__(raw, y, y_true, **kwargs)
    raw_grad = cls.backward.__wrapped__(raw)
    assert value == raw_value
    assert grad.dtype == raw_grad.dtype == dtype
    assert np.array_equal(grad, raw_grad)
    assert wrapped.backward(scale=4.0).dtype == dtype
    assert np.array_equal(wrapped.backward(scale=4.0), raw_grad * dtype(4.0))


# =============================================================================================
# the loss scale: applied in float32, before the cast to float16
# =============================================================================================


def test_scale_is_applied_before_the_cast_so_small_gradients_survive():
    n = 8192
    y_pred, y_true = np.zeros((n, 1), F16), np.full((n, 1), 1e-4)
    loss = MSE()
    loss(y_pred, y_true)
    plain = loss.backward()
    assert not plain.any()  # 2 * 1e-4 / 8192 = 2.4e-8 is below float16's smallest subnormal
    scaled = loss.backward(scale=2.0**15)
    assert scaled.dtype == F16
    reference = MSE()
    reference(y_pred.astype(np.float32), y_true)
    expected = (reference.backward() * np.float32(2.0**15)).astype(F16)
    assert np.array_equal(scaled, expected)
    assert scaled[0, 0] == pytest.approx(-2 * 1e-4 / n * 2.0**15, rel=1e-3)


def test_scaled_gradient_beyond_float16_is_inf_without_a_warning():
    loss = MSE()
    loss(_f16([[300.0]]), np.zeros(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        grad = loss.backward(scale=2.0**15)
    assert grad.dtype == F16 and np.isposinf(grad).all()


def test_fused_gradient_takes_the_scale_too():
    loss = CategoricalCrossentropy()
    p = _f16([[0.25, 0.75], [0.5, 0.5]])
    loss(p, ONE_HOT_2[:2])
    reference = CategoricalCrossentropy()
    reference(p.astype(np.float32), ONE_HOT_2[:2])
    expected = (reference.backward_logits() * np.float32(1024.0)).astype(F16)
    assert np.array_equal(loss.backward_logits(scale=1024.0), expected)


# =============================================================================================
# losses written by a plugin: the rule comes from the base class
# =============================================================================================


class _Cube(Loss):
    """``mean(r^3)``: a third-party loss that computes in whatever dtype it is given."""

    seen: ClassVar[list[np.dtype]] = []

    def forward(self, y_pred, y_true, sample_weight=None):
        y_pred = self._check_pred(y_pred)
        type(self).seen.append(y_pred.dtype)
        self._r = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
        return float(np.mean(self._r**3, dtype=np.float64))

    def backward(self):
        return 3 * self._r**2 / self._r.size


class _ThreeTimesCube(_Cube):
    """Calls the wrapped ``super()`` methods: only the outermost call converts."""

    inner: ClassVar[list[np.dtype]] = []

    def forward(self, y_pred, y_true, sample_weight=None):
        return 3 * super().forward(y_pred, y_true, sample_weight)

    def backward(self):
        grad = super().backward()
        type(self).inner.append(grad.dtype)
        return grad * 3


def test_a_plugin_loss_receives_float32_and_returns_float16():
    _Cube.seen.clear()
    loss = _Cube()
    value = loss(_f16([[50.0], [-10.0]]), np.zeros((2, 1)))  # 50^3 = 125000 > 65504
    assert _Cube.seen == [np.float32]
    assert value == pytest.approx((125000 - 1000) / 2)
    grad = loss.backward()
    assert grad.dtype == F16
    assert np.array_equal(grad, (3 * np.float32([[2500.0], [100.0]]) / 2).astype(F16))


def test_a_loss_calling_super_converts_once():
    _Cube.seen.clear()
    _ThreeTimesCube.inner.clear()
    loss = _ThreeTimesCube()
    value = loss(_f16([[50.0], [-10.0]]), np.zeros((2, 1)))
    assert _Cube.seen == [np.float32]
    assert value == pytest.approx(3 * (125000 - 1000) / 2)
    grad = loss.backward()
    assert _ThreeTimesCube.inner == [np.float32]  # not cast to float16 before the * 3
    assert grad.dtype == F16
    assert np.array_equal(grad, (np.float32([[2500.0], [100.0]]) * 1.5 * 3).astype(F16))


def test_a_float32_forward_after_a_float16_one_returns_float32():
    loss = MSE()
    loss(_f16([[1.0]]), np.zeros(1))
    assert loss.backward().dtype == F16
    loss(np.float32([[1.0]]), np.zeros(1))
    assert loss.backward().dtype == np.float32


def test_widen():
    assert COMPUTE_DTYPE == np.float32
    assert widen(_f16([1.5])).dtype == np.float32
    for kept in (np.float32([1.0]), np.float64([1.0]), np.int64([1]), [1.0, 2.0]):
        assert widen(kept) is kept


# =============================================================================================
# a float16 model: evaluate, fit, the fused path
# =============================================================================================


def _float16_regressor():
    with default_dtype("float16"):
        model = Sequential([Linear(2, 1, weight_init="zeros")])
    return model


def test_float16_model_fits_with_a_finite_loss_equal_to_the_float32_one():
    model = _float16_regressor()
    model.compile(SGD(0.0), "mse", metrics=["mse", "mae"])
    x, y = np.ones((64, 2), F16), np.full((64, 1), 300, F16)
    history = model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert history.history["loss"] == [pytest.approx(90000.0)]
    assert history.history["mse"] == [pytest.approx(90000.0)]
    assert history.history["mae"] == [pytest.approx(300.0)]
    result = model.evaluate(x, y, verbose=0)
    assert result == {"loss": pytest.approx(90000.0), "mse": pytest.approx(90000.0), "mae": 300.0}
    for p in model.parameters():
        assert p.data.dtype == F16


def test_float16_model_backward_stays_float16():
    model = _float16_regressor()
    loss = MSE()
    out = model(np.ones((4, 2), F16))
    assert out.dtype == F16
    loss(out, np.full((4, 1), 300.0))
    grad = loss.backward()
    assert grad.dtype == F16
    model.zero_grad()
    model.forward(np.ones((4, 2), F16))
    model.backward(grad)
    for p in model.parameters():
        assert p.grad.dtype == F16


def test_float16_softmax_model_fused_loss_matches_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3))
    y = np.eye(4)[rng.integers(0, 4, 32)]
    values = {}
    for dtype in ("float16", "float32"):
        with default_dtype(dtype):
            model = Sequential([Linear(3, 4, activation="softmax", weight_init="zeros")])
        model.compile(SGD(0.0), "categorical_crossentropy")
        values[dtype] = model.evaluate(x.astype(dtype), y, verbose=0)["loss"]
        history = model.fit(x.astype(dtype), y, epochs=1, batch_size=32, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    assert values["float16"] == values["float32"] == pytest.approx(np.log(4.0))


def test_float16_fit_keeps_gradients_below_float16_range_as_amp_does():
    """GradScaler scales the float32 loss, so the float16 gradient 2 * 1e-4 / 8192 survives."""
    with default_dtype("float16"):
        model = Sequential([Linear(1, 1, weight_init="zeros", bias_init="zeros")])
    model.compile(SGD(1.0), "mse")
    n = 8192
    model.fit(np.ones((n, 1), F16), np.full((n, 1), 1e-4, F16), epochs=1, batch_size=n, verbose=0)
    target = float(F16(1e-4))
    # closed form: dL/dw = dL/db = mean(2 (0 - y)) = -2y; one SGD step of lr 1 gives 2y
    assert float(model.layers[0].weight.data[0, 0]) == pytest.approx(2 * target, rel=1e-2)
    assert float(model.layers[0].bias.data[0]) == pytest.approx(2 * target, rel=1e-2)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_loss_scale_beyond_float16_range_scales_a_small_gradient():
    grad = LossScaler(2.0**16).scale_gradient(_f16([1e-3, 0.0]))
    assert grad.dtype == F16
    assert np.array_equal(grad, (np.float32([1e-3, 0.0]) * np.float32(2.0**16)).astype(F16))


# =============================================================================================
# metrics on float16 outputs
# =============================================================================================

P_BINARY = np.array([[0.7], [0.2], [0.9], [0.6], [0.4], [0.8]])  # 0.7 is 0.7002 in float16
Y_BINARY = np.array([1, 0, 1, 0, 1, 1])
P_CLASSES = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
Y_CLASSES = np.array([1, 0, 2, 0])
P_REGRESSION = np.array([[300.0, -200.0], [60000.0, 0.1], [-60000.0, 2.0]])
Y_REGRESSION = np.array([[0.0, 0.0], [-60000.0, 0.2], [60000.0, 1.0]])

METRIC_CASES = [
    ("accuracy", lambda: Accuracy(threshold=0.7), P_BINARY, Y_BINARY),
    ("accuracy", Accuracy, P_CLASSES, Y_CLASSES),
    ("auc", AUC, P_BINARY, Y_BINARY),
    ("confusion_matrix", lambda: ConfusionMatrix(threshold=0.7), P_BINARY, Y_BINARY),
    ("f1_score", lambda: F1Score(threshold=0.7), P_BINARY, Y_BINARY),
    ("mae", MeanAbsoluteError, P_REGRESSION, Y_REGRESSION),
    ("mse", MeanSquaredError, P_REGRESSION, Y_REGRESSION),
    ("precision", lambda: Precision(threshold=0.7), P_BINARY, Y_BINARY),
    ("recall", lambda: Recall(threshold=0.7), P_BINARY, Y_BINARY),
    ("recall", lambda: Recall(average="macro"), P_CLASSES, Y_CLASSES),
    ("top_k_accuracy", lambda: TopKAccuracy(k=1), P_CLASSES, Y_CLASSES),
]
METRIC_IDS = [f"{c[0]}-{i}" for i, c in enumerate(METRIC_CASES)]


def test_every_registered_metric_has_a_float16_case():
    assert {name for name, *_ in METRIC_CASES} == set(metrics.names())


def _epoch(factory, y_pred, y_true, weighted):
    metric = factory()
    halves = [slice(0, len(y_pred) // 2), slice(len(y_pred) // 2, None)]
    weight = np.linspace(0.5, 2.0, len(y_pred))
    for part in halves:
        kwargs = {"sample_weight": weight[part]} if weighted else {}
        metric.update_state(y_true[part], y_pred[part], **kwargs)
    return np.asarray(metric.result(), dtype=np.float64)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name, factory, y_pred, y_true", METRIC_CASES, ids=METRIC_IDS)
def test_float16_metric_equals_the_float32_one(name, factory, y_pred, y_true, weighted):
    assert type(factory()) is type(metrics.get(name))
    ours = _epoch(factory, y_pred.astype(F16), y_true, weighted)
    reference = _epoch(factory, y_pred.astype(F16).astype(np.float32), y_true, weighted)
    assert np.isfinite(ours).all()
    assert np.array_equal(ours, reference)


def test_float16_mse_metric_is_exact():
    """(300^2 + 200^2 + 120000^2 + ...) / 6 in float64, not inf."""
    p16 = P_REGRESSION.astype(F16)
    expected = np.mean((p16.astype(np.float64) - Y_REGRESSION) ** 2)
    assert MeanSquaredError()(p16, Y_REGRESSION) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(expected) and expected > 65504


def test_thresholded_float16_score_is_decided_as_float32():
    """0.7 is 0.7002 in float16: above a threshold of 0.7, as the same float32 score is."""
    p = _f16([[0.7]])
    assert Accuracy(threshold=0.7)(p, np.array([1])) == 1.0
    assert Precision(threshold=0.7)(p, np.array([1])) == 1.0
    assert ConfusionMatrix(threshold=0.7)(p, np.array([1]))[1, 1] == 1.0


def test_function_metric_receives_float32():
    seen = []

    def squared_error(y_true, y_pred):
        seen.append(y_pred.dtype)
        return (y_pred - y_true) ** 2

    metric = FunctionMetric(squared_error)
    metric.update_state(np.zeros((2, 1)), _f16([[300.0], [-300.0]]))
    assert seen == [np.float32]
    assert metric.result() == 90000.0
    assert metric(_f16([[300.0]]), np.zeros((1, 1))) == 90000.0


class _Half(Metric):
    """A metric whose values are float16 whatever it is given."""

    def values(self, y_pred, y_true):
        return np.asarray(y_pred, dtype=F16)[:, 0]


def test_a_float16_valued_metric_is_averaged_in_float64():
    metric = _Half()
    metric.update(np.array([[1.0], [1.0], [2.0]]), np.zeros(3))
    assert metric.result() == pytest.approx(4.0 / 3.0, rel=1e-12)  # float16's mean is 1.333


class _Probe(Metric):
    """Records the dtype its values() is given."""

    seen: ClassVar[list[np.dtype]] = []

    def values(self, y_pred, y_true):
        type(self).seen.append(np.asarray(y_pred).dtype)
        return np.zeros(len(y_pred))


@pytest.mark.parametrize(
    "dtype, seen", [(F16, np.float32), (np.float32, np.float32), (np.float64, np.float64)]
)
def test_a_custom_metric_sees_at_least_float32(dtype, seen):
    _Probe.seen.clear()
    metric = _Probe()
    y_pred = np.ones((2, 1), dtype)
    metric.update(y_pred, np.zeros(2))
    metric.update(y_pred, np.zeros(2), np.ones(2))
    metric(y_pred, np.zeros(2))
    assert _Probe.seen == [seen] * 3
