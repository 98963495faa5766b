"""Issue 14, stateful epoch metrics: equal to scikit-learn's over the whole epoch.

Each metric is fed an epoch in uneven batches (so a mean of batch values would
differ) and compared with scikit-learn on all the predictions at once.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_sklearn

from framework import metrics
from framework.base.metric import result_value
from framework.errors import ConfigError, DataError
from plugins.metrics import AUC, ConfusionMatrix, F1Score, Precision, Recall


class _SklearnMetrics:
    """``sklearn.metrics``, imported at first use (0.7 s that every xdist worker paid at collection)."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # pytest's collection probes module objects for these
            raise AttributeError(name)
        import sklearn.metrics

        return getattr(sklearn.metrics, name)


skm = _SklearnMetrics()

RNG = np.random.default_rng(5)
N = 1000
BATCHES = [slice(0, 7), slice(7, 300), slice(300, 301), slice(301, N)]
Y_BIN = RNG.integers(0, 2, N)
LOGITS_BIN = (Y_BIN * 1.2 - 0.6 + RNG.normal(size=N))[:, None]
PROBS_BIN = 1 / (1 + np.exp(-LOGITS_BIN))
Y_MC = RNG.integers(0, 4, N)
SCORES_MC = RNG.normal(size=(N, 4)) + np.eye(4)[Y_MC] * 1.0
SW = RNG.uniform(0.1, 3.0, N)


def run(metric, y_pred, y_true, sample_weight=None, expects=None, link=None):
    metric.bind_output(expects, link)
    metric.reset_state()
    for b in BATCHES:
        metric.update_state(y_true[b], y_pred[b], None if sample_weight is None else sample_weight[b])
    return metric.result()


@requires_sklearn
@pytest.mark.parametrize("cls", [Precision, Recall, F1Score])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_scores_on_logits_and_probabilities_equal_sklearn(cls, weighted):
    sw = SW if weighted else None
    ref_fn = {Precision: skm.precision_score, Recall: skm.recall_score, F1Score: skm.f1_score}[cls]
    y_hat = (LOGITS_BIN[:, 0] > 0).astype(int)
    ref = ref_fn(Y_BIN, y_hat, sample_weight=sw)
    assert run(cls(), LOGITS_BIN, Y_BIN, sw, "logits", "sigmoid") == pytest.approx(ref, abs=1e-12)
    assert run(cls(), PROBS_BIN, Y_BIN, sw, "probabilities", "sigmoid") == pytest.approx(ref, abs=1e-12)


@requires_sklearn
@pytest.mark.parametrize("cls", [Precision, Recall, F1Score])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_multiclass_averages_equal_sklearn(cls, average):
    ref_fn = {Precision: skm.precision_score, Recall: skm.recall_score, F1Score: skm.f1_score}[cls]
    y_hat = SCORES_MC.argmax(axis=1)
    ref = ref_fn(Y_MC, y_hat, average=average, sample_weight=SW, zero_division=0)
    got = run(cls(average=average), SCORES_MC, Y_MC, SW, "logits", "softmax")
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert cls(average=average).scalar is (average is not None)


@requires_sklearn
def test_macro_skips_classes_absent_from_targets_and_predictions_as_sklearn_does():
    scores = SCORES_MC.copy()
    scores[:, 3] = -10  # class 3 never predicted
    keep = Y_MC != 3  # and never a target
    got = run(F1Score(average="macro"), scores[keep], Y_MC[keep])
    assert got == pytest.approx(skm.f1_score(Y_MC[keep], scores[keep].argmax(1), average="macro"), abs=1e-12)


@requires_sklearn
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_multilabel_sigmoid_equals_sklearn(average):
    y = RNG.integers(0, 2, (N, 3))
    logits = y * 1.5 - 0.75 + RNG.normal(size=(N, 3))
    ref = skm.f1_score(y, (logits > 0).astype(int), average=average)
    assert run(F1Score(average=average), logits, y, None, "logits", "sigmoid") == pytest.approx(
        ref, abs=1e-12
    )


def test_binary_average_refuses_a_multiclass_problem():
    with pytest.raises(DataError, match="average='macro'"):
        run(Precision(), SCORES_MC, Y_MC)


@requires_sklearn
@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("weighted", [False, True])
def test_auc_exact_equals_sklearn(curve, weighted):
    sw = SW if weighted else None
    ref_fn = skm.roc_auc_score if curve == "ROC" else skm.average_precision_score
    ref = ref_fn(Y_BIN, PROBS_BIN[:, 0], sample_weight=sw)
    exact = AUC(curve=curve, num_thresholds=None)
    assert run(exact, LOGITS_BIN, Y_BIN, sw, "logits", "sigmoid") == pytest.approx(ref, abs=1e-12)
    assert run(exact, PROBS_BIN, Y_BIN, sw, "probabilities", "sigmoid") == pytest.approx(ref, abs=1e-12)


@requires_sklearn
def test_auc_thresholded_approximation_within_stated_tolerance():
    """Keras's 200-threshold approximation: ROC within 1e-3, PR within 2e-2 (docs/guide/metrics.md)."""
    roc = run(AUC(), LOGITS_BIN, Y_BIN, SW, "logits", "sigmoid")
    assert roc == pytest.approx(skm.roc_auc_score(Y_BIN, PROBS_BIN[:, 0], sample_weight=SW), abs=1e-3)
    pr = run(AUC(curve="PR"), PROBS_BIN, Y_BIN, SW, "probabilities", "sigmoid")
    assert pr == pytest.approx(
        skm.average_precision_score(Y_BIN, PROBS_BIN[:, 0], sample_weight=SW), abs=2e-2
    )


@requires_sklearn
def test_auc_multiclass_is_flattened_one_vs_rest_micro():
    probs = np.exp(SCORES_MC) / np.exp(SCORES_MC).sum(1, keepdims=True)
    ref = skm.roc_auc_score(np.eye(4)[Y_MC], probs, average="micro")
    got = run(AUC(num_thresholds=None), SCORES_MC, Y_MC, None, "logits", "softmax")
    assert got == pytest.approx(ref, abs=1e-12)


def test_auc_refuses_logits_it_was_not_told_about():
    with pytest.raises(DataError, match="from_logits=True"):
        run(AUC(), LOGITS_BIN, Y_BIN)


@requires_sklearn
@pytest.mark.parametrize("weighted", [False, True])
def test_confusion_matrix_equals_sklearn(weighted):
    sw = SW if weighted else None
    cm = run(ConfusionMatrix(), SCORES_MC, Y_MC, sw, "logits", "softmax")
    ref = skm.confusion_matrix(Y_MC, SCORES_MC.argmax(1), labels=range(4), sample_weight=sw)
    np.testing.assert_allclose(cm, ref, atol=1e-9)
    binary = run(ConfusionMatrix(), LOGITS_BIN, Y_BIN, None, "logits", "sigmoid")
    np.testing.assert_array_equal(binary, skm.confusion_matrix(Y_BIN, (LOGITS_BIN[:, 0] > 0).astype(int)))
    assert ConfusionMatrix.scalar is False
    value = result_value(ConfusionMatrix())
    assert isinstance(value, np.ndarray)


def test_epoch_value_is_not_a_mean_of_batch_values():
    p = Precision()
    p.update(np.array([0.9]), np.array([1]))  # batch precision 1
    p.update(np.array([0.9, 0.9, 0.9]), np.array([0, 0, 1]))  # batch precision 1/3
    assert p.result() == pytest.approx(2 / 4)  # not (1 + 1/3) / 2
    p.reset()
    assert np.isnan(p.result())


def test_registered_names_and_config_round_trip():
    for name, cls in [
        ("precision", Precision),
        ("recall", Recall),
        ("f1_score", F1Score),
        ("auc", AUC),
        ("confusion_matrix", ConfusionMatrix),
    ]:
        metric = metrics.get(name)
        assert type(metric) is cls and metric.name == name
        rebuilt = metrics.get({"class_name": name, "config": metric.get_config()})
        assert rebuilt.get_config() == metric.get_config()
    assert metrics.get("auc", curve="pr", num_thresholds=None).get_config()["curve"] == "PR"


def test_invalid_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="average"):
        F1Score(average="samples")
    with pytest.raises(ConfigError, match="curve"):
        AUC(curve="DET")
    with pytest.raises(ConfigError, match="num_thresholds"):
        AUC(num_thresholds=1)
    with pytest.raises(ConfigError, match="num_classes"):
        ConfusionMatrix(num_classes=1)
