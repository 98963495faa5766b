"""Tests of the built-in metrics: hand-computed values, running means, errors, names."""

from __future__ import annotations

import numpy as np
import pytest

from framework import metrics
from framework.base.metric import FunctionMetric
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.namespace import serialize
from plugins.metrics import Accuracy, MeanAbsoluteError, MeanSquaredError, TopKAccuracy

SCORES = np.array(
    [
        [0.1, 0.7, 0.2],  # predicts 1
        [2.0, -1.0, 0.5],  # predicts 0
        [0.3, 0.3, 0.4],  # predicts 2
        [-5.0, 1.0, 0.0],  # predicts 1
    ]
)
LABELS = np.array([1, 2, 2, 0])  # correct: rows 0 and 2


def test_accuracy_with_labels_and_one_hot():
    assert Accuracy()(SCORES, LABELS) == 0.5
    assert Accuracy()(SCORES, np.eye(3)[LABELS]) == 0.5
    assert Accuracy()(SCORES, LABELS[:, None]) == 0.5


def test_accuracy_spatial_outputs():
    y_pred = np.zeros((2, 3, 2))
    y_pred[0, 1, 0] = y_pred[0, 2, 1] = y_pred[1, 0, 0] = y_pred[1, 0, 1] = 1.0
    y_true = np.array([[1, 0], [0, 0]])  # 3 of the 4 positions right
    assert Accuracy()(y_pred, y_true) == 0.75


def test_binary_accuracy_threshold():
    probs = np.array([0.9, 0.4, 0.6, 0.1, 0.55])
    truth = np.array([1, 0, 0, 0, 1])
    assert Accuracy()(probs, truth) == pytest.approx(4 / 5)
    assert Accuracy()(probs[:, None], truth[:, None]) == pytest.approx(4 / 5)
    assert Accuracy(threshold=0.58)(probs, truth) == pytest.approx(3 / 5)
    logits = np.array([[2.0], [-0.5], [0.3], [-3.0]])
    assert Accuracy(threshold=0.0)(logits, np.array([1, 0, 1, 1])) == pytest.approx(3 / 4)


def test_top_k_accuracy_hand_values():
    # true-class ranks: row0 1st, row1 2nd, row2 1st, row3 3rd
    assert TopKAccuracy(k=1)(SCORES, LABELS) == 0.5
    assert TopKAccuracy(k=2)(SCORES, LABELS) == 0.75
    assert TopKAccuracy(k=3)(SCORES, LABELS) == 1.0
    assert TopKAccuracy()(SCORES, LABELS) == 1.0  # k=5 >= C
    assert TopKAccuracy(k=2)(SCORES, np.eye(3)[LABELS]) == 0.75


def test_regression_metrics_hand_values():
    pred = np.array([[1.0, 2.0], [3.0, -1.0]])
    true = np.array([[0.0, 2.0], [1.0, 1.0]])
    assert MeanAbsoluteError()(pred, true) == pytest.approx((1 + 0 + 2 + 2) / 4)
    assert MeanSquaredError()(pred, true) == pytest.approx((1 + 0 + 4 + 4) / 4)
    assert MeanSquaredError()(np.array([[1.0], [2.0]]), np.array([0.0, 0.0])) == pytest.approx(2.5)


def test_running_mean_over_batches_of_different_sizes():
    acc = Accuracy()
    acc.update(SCORES[:3], LABELS[:3])  # 2 of 3 right
    acc.update(SCORES[3:], LABELS[3:])  # 0 of 1 right
    assert acc.result() == pytest.approx(2 / 4)
    mae = MeanAbsoluteError()
    mae.update(np.array([1.0, 2.0]), np.array([0.0, 0.0]))  # errors 1, 2
    mae.update(np.array([4.0, 4.0, 4.0]), np.array([0.0, 0.0, 1.0]))  # errors 4, 4, 3
    assert mae.result() == pytest.approx((1 + 2 + 4 + 4 + 3) / 5)
    mae.reset()
    assert np.isnan(mae.result())
    mae.update(np.array([1.0]), np.array([3.0]))
    assert mae.result() == 2.0


def test_names_and_registry():
    assert metrics.get("accuracy").name == "accuracy"
    assert type(metrics.get("acc")) is Accuracy
    assert metrics.get("top_k_accuracy", k=3).name == "top_k_accuracy"
    assert type(metrics.get("mae")) is MeanAbsoluteError and metrics.get("mae").name == "mae"
    assert type(metrics.get("mse")) is MeanSquaredError and metrics.get("mse").name == "mse"
    assert Accuracy(name="train_acc").name == "train_acc"


def test_config_round_trip():
    for metric in (Accuracy(threshold=0.0), TopKAccuracy(k=2), Accuracy(name="acc2")):
        rebuilt = metrics.get({"class_name": type(metric).__name__, "config": metric.get_config()})
        assert rebuilt.get_config() == metric.get_config()
        assert rebuilt(SCORES, LABELS) == metric(SCORES, LABELS)
    assert serialize("metrics", TopKAccuracy(k=2)) == {"class_name": "top_k_accuracy", "config": {"k": 2}}


def test_errors():
    with pytest.raises(ShapeError, match=r"Accuracy.*\(4,\).*\(3,\)"):
        Accuracy()(SCORES, LABELS[:3])
    with pytest.raises(ShapeError, match="binary"):
        Accuracy()(np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"label 3 .*C=3"):
        TopKAccuracy(k=1)(SCORES, np.array([0, 1, 3, 0]))
    with pytest.raises(ShapeError, match="MeanSquaredError"):
        MeanSquaredError()(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="TopKAccuracy"):
        TopKAccuracy()(np.zeros(3), np.zeros(3))
    with pytest.raises(ConfigError, match="k must be"):
        TopKAccuracy(k=0)
    with pytest.raises(ConfigError, match="threshold"):
        Accuracy(threshold=float("nan"))


# -- issue 14 item 3: accuracy knows what the model outputs ----------------------------


def _logit_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    logits = np.where(y == 1, 1.0, -1.0) * rng.uniform(0.05, 3.0, 400)
    logits[:3] *= -1  # three wrong predictions: true accuracy 397 / 400 = 0.9925
    return logits[:, None], y


def test_item3_accuracy_bound_to_logits_thresholds_at_zero():
    """Fails on the old code, which thresholded logits at 0.5 whatever the loss."""
    logits, y = _logit_data()
    acc = Accuracy()
    acc.bind_output("logits", "sigmoid")
    acc.update(logits[:250], y[:250])
    acc.update(logits[250:], y[250:])
    assert acc.result() == pytest.approx(0.9925)
    assert acc.result() == pytest.approx(np.mean((logits[:, 0] > 0) == y))


def test_item3_accuracy_bound_to_probabilities_and_softmax():
    logits, y = _logit_data()
    acc = Accuracy()
    acc.bind_output("probabilities", "sigmoid")
    acc.update(1 / (1 + np.exp(-logits)), y)
    assert acc.result() == pytest.approx(0.9925)
    for expects in ("logits", "probabilities"):
        acc = metrics.get("accuracy")
        acc.bind_output(expects, "softmax")
        assert acc(SCORES, LABELS) == 0.5  # argmax either way


def test_item3_accuracy_multilabel_sigmoid_is_elementwise():
    logits = np.array([[2.0, -1.0, 0.5], [-0.3, 0.2, -2.0]])
    truth = np.array([[1, 0, 0], [0, 1, 0]])
    acc = Accuracy()
    acc.bind_output("logits", "sigmoid")
    assert acc(logits, truth) == pytest.approx(5 / 6)


def test_item3_bind_output_rejects_unknown_values():
    with pytest.raises(ConfigError, match="expects"):
        Accuracy().bind_output("scores", None)
    with pytest.raises(ConfigError, match="link"):
        Accuracy().bind_output("logits", "tanh")


# -- issue 14 item 4: plain functions as metrics -------------------------------------


def test_item4_plain_function_metric_named_by_function_and_keras_argument_order():
    seen = []

    def mean_error(y_true, y_pred):
        seen.append((y_true.copy(), y_pred.copy()))
        return y_pred - y_true  # one value per sample

    metric = metrics.get(mean_error)
    assert isinstance(metric, FunctionMetric) and metric.name == "mean_error"
    metric.update(np.array([1.0, 3.0]), np.array([0.0, 0.0]))  # the loop's order: (y_pred, y_true)
    np.testing.assert_array_equal(seen[0][0], [0.0, 0.0])  # fn received y_true first
    metric.update_state(np.array([0.0]), np.array([6.0]))  # Keras's order
    assert metric.result() == pytest.approx((1 + 3 + 6) / 3)
    assert serialize("metrics", metric) == "mean_error"


def test_item4_function_returning_a_float_is_weighted_by_batch_size():
    def batch_mean(y_true, y_pred):
        return float(np.mean(y_pred == y_true))

    metric = metrics.get(batch_mean)
    metric.update_state(np.array([1, 1, 1]), np.array([1, 1, 1]))  # 1.0 over 3 samples
    metric.update_state(np.array([1]), np.array([0]))  # 0.0 over 1 sample
    assert metric.result() == pytest.approx(3 / 4)
    metric.reset_state()
    assert np.isnan(metric.result())


def test_item4_keras_state_methods_map_onto_the_loop_methods():
    acc = Accuracy()
    acc.update_state(LABELS, SCORES)
    assert acc.result() == 0.5
    acc.reset_state()
    acc.update(SCORES[:1], LABELS[:1], sample_weight=np.array([3.0]))
    acc.update(SCORES[1:2], LABELS[1:2], sample_weight=np.array([1.0]))
    assert acc.result() == pytest.approx(0.75)  # sum(w * correct) / sum(w)
    acc.reset()
    assert np.isnan(acc.result())
