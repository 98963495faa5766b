"""``get_state`` / ``set_state`` / ``merge_state``: metrics fed parts of the samples, merged, equal one.

Every built-in metric, on one data set cut into three parts (one of them
empty), with and without sample weights: the merge of the parts' metrics
gives the whole's value (to float64 summation order). Data-parallel ``fit``
relies on it (``tests/test_distributed_hunt.py`` checks the ranks' History
against one process).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from framework.base.metric import FunctionMetric, Metric
from framework.errors import ConfigError, ShapeError
from framework.metrics import (
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

N = 60
CUTS = ((0, 25), (25, 25), (25, N))  # the middle part is empty


def _data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng({"multiclass": 0, "binary": 1, "multilabel": 2, "regression": 3}[kind])
    if kind == "multiclass":
        return rng.random((N, 4)), rng.integers(0, 4, N)
    if kind == "binary":
        return rng.random(N), rng.integers(0, 2, N)
    if kind == "multilabel":
        return rng.random((N, 3)), rng.integers(0, 2, (N, 3))
    return rng.normal(size=(N, 2)), rng.normal(size=(N, 2))


def _abs_error(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.abs(y_true - y_pred)


def _multilabel(metric: Metric) -> Metric:
    metric.bind_output("probabilities", "sigmoid")
    return metric


CASES: dict[str, tuple[str, Callable[[], Metric]]] = {
    "accuracy": ("multiclass", Accuracy),
    "binary-accuracy": ("binary", Accuracy),
    "top-2": ("multiclass", lambda: TopKAccuracy(k=2)),
    "mae": ("regression", MeanAbsoluteError),
    "mse": ("regression", MeanSquaredError),
    "function": ("regression", lambda: FunctionMetric(_abs_error)),
    "precision-binary": ("binary", Precision),
    "recall-binary": ("binary", Recall),
    "precision-macro": ("multiclass", lambda: Precision(average="macro")),
    "recall-micro": ("multiclass", lambda: Recall(average="micro")),
    "f1-weighted": ("multiclass", lambda: F1Score(average="weighted")),
    "f1-per-class": ("multiclass", lambda: F1Score(average=None)),
    "precision-multilabel": ("multilabel", lambda: _multilabel(Precision(average="macro"))),
    "confusion-matrix": ("multiclass", ConfusionMatrix),
    "auc-roc": ("binary", AUC),
    "auc-pr": ("binary", lambda: AUC(curve="PR")),
    "auc-exact": ("binary", lambda: AUC(num_thresholds=None)),
    "auc-multiclass": ("multiclass", AUC),
}


def _fed(make: Callable[[], Metric], y_pred: Any, y_true: Any, w: Any, start: int, stop: int) -> Metric:
    metric = make()
    if stop > start:
        metric.update_state(y_true[start:stop], y_pred[start:stop], None if w is None else w[start:stop])
    return metric


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample-weighted"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_parts_equal_the_whole(case: str, weighted: bool) -> None:
    kind, make = CASES[case]
    y_pred, y_true = _data(kind)
    w = np.random.default_rng(9).uniform(0.1, 3.0, N) if weighted else None
    whole = _fed(make, y_pred, y_true, w, 0, N)
    parts = [_fed(make, y_pred, y_true, w, a, b) for a, b in CUTS]
    before = [copy.deepcopy(p.get_state()) for p in parts]
    merged = make()
    merged.merge_state(parts)
    got, want = np.asarray(merged.result()), np.asarray(whole.result())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the merged metrics are left as they were
    for part, state in zip(parts, before):
        _assert_same_state(part.get_state(), state)
    # and a mean of the parts' values weighted by sample counts is not the same thing for ratios
    assert type(merged).merges()


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_round_trip_through_a_fresh_metric(case: str) -> None:
    kind, make = CASES[case]
    y_pred, y_true = _data(kind)
    fed = _fed(make, y_pred, y_true, None, 0, N)
    state = fed.get_state()
    copy_ = make()
    copy_.set_state(state)
    np.testing.assert_array_equal(np.asarray(copy_.result()), np.asarray(fed.result()))
    # the state handed out is a copy: changing it changes neither metric
    for value in state.values():
        if isinstance(value, np.ndarray) and value.size:
            value[...] = 0
    np.testing.assert_array_equal(np.asarray(copy_.result()), np.asarray(fed.result()))
    # an empty state resets
    copy_.set_state(make().get_state())
    np.testing.assert_array_equal(np.asarray(copy_.result()), np.asarray(make().result()))


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def test_precision_merged_differs_from_the_mean_of_the_parts() -> None:
    # why merging counts matters: precision of the union is not the count-weighted mean of precisions
    y_pred = np.array([0.9, 0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1])
    y_true = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    parts = [_fed(Precision, y_pred, y_true, None, a, b) for a, b in ((0, 4), (4, 8))]
    merged = Precision()
    merged.merge_state(parts)
    assert merged.result() == pytest.approx(2 / 4)
    assert np.mean([p.result() for p in parts]) == pytest.approx((1 / 3 + 1) / 2)


def test_merging_another_class_is_refused() -> None:
    message = "Precision.merge_state: can only merge metrics of its own class, got Recall"
    with pytest.raises(ConfigError, match=re.escape(message)):
        Precision().merge_state([Recall()])


def test_merging_another_number_of_classes_is_refused_and_merges_nothing() -> None:
    three, four = Precision(average="macro"), Precision(average="macro")
    three.update_state(np.array([0, 1, 2]), np.eye(3))
    four.update_state(np.array([0, 1, 2, 3]), np.eye(4))
    target = Precision(average="macro")
    with pytest.raises(ShapeError, match="multiclass with 3 classes, another multiclass with 4"):
        target.merge_state([three, four])
    assert target.get_state()["mode"] is None


def test_auc_of_other_buckets_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"configured alike.*num_thresholds"):
        AUC().merge_state([AUC(num_thresholds=50)])
    with pytest.raises(ConfigError, match="num_thresholds=None, this AUC has 200"):
        AUC().set_state(AUC(num_thresholds=None).get_state())


@pytest.mark.parametrize(
    ("make", "state", "message"),
    [
        (Accuracy, {"total": 1.0}, "Accuracy.set_state: the state needs 'count', got \\['total'\\]"),
        (Precision, {"mode": "ranking"}, "mode must be None, 'multiclass' or 'multilabel', got 'ranking'"),
        (Precision, {"mode": "multiclass", "classes": -2}, "classes must be a positive integer, got -2"),
        (Precision, {"mode": "multiclass", "classes": "3"}, "classes must be a positive integer, got '3'"),
        (
            Precision,
            {"mode": "multiclass", "classes": 2, "matrix": np.zeros((3, 3)), "seen": np.zeros(2, bool)},
            "matrix must have shape \\(2, 2\\) for 2 classes, got \\(3, 3\\)",
        ),
        (AUC, {"num_thresholds": 200, "pos": np.zeros(3), "neg": np.zeros(3)}, "must have shape \\(201,\\)"),
        (AUC, {"num_thresholds": 200, "pos": "many", "neg": np.zeros(201)}, "pos must be numbers, got str"),
        (Accuracy, {"total": "1", "count": 2}, "total must be numbers, got str"),
        (Accuracy, {"total": 1.0, "count": [1, 2]}, "total and count must be numbers, got arrays"),
    ],
)
def test_bad_states_are_refused(make: Callable[[], Metric], state: dict[str, Any], message: str) -> None:
    metric = make()
    with pytest.raises((ConfigError, ShapeError), match=message):
        metric.set_state(state)


class _CountsOwnState(Metric):
    """A user metric keeping its own counts, without the state methods."""

    def __init__(self) -> None:
        super().__init__(name="hits")
        self.hits = 0

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.hits += int(np.sum(np.asarray(y_true) == np.asarray(y_pred)))

    def result(self) -> float:
        return float(self.hits)

    def reset_state(self) -> None:
        self.hits = 0


def test_a_metric_with_its_own_counts_and_no_state_methods_cannot_merge() -> None:
    assert not _CountsOwnState.merges()
    with pytest.raises(ConfigError, match=r"_CountsOwnState\.merge_state: this metric keeps its own counts"):
        _CountsOwnState().merge_state([_CountsOwnState()])
    with pytest.raises(ConfigError, match="must implement get_state, set_state and merge_state"):
        _CountsOwnState().get_state()


class _CountsWithState(_CountsOwnState):
    def get_state(self) -> dict[str, Any]:
        return {"hits": self.hits}

    def set_state(self, state: dict[str, Any]) -> None:
        self.hits = int(state["hits"])

    def merge_state(self, metrics: Any) -> None:
        self.hits += sum(m.hits for m in metrics)


def test_a_metric_with_its_own_counts_and_the_state_methods_merges() -> None:
    assert _CountsWithState.merges()
    a, b = _CountsWithState(), _CountsWithState()
    a.update_state(np.array([1, 2]), np.array([1, 2]))
    b.update_state(np.array([1, 2]), np.array([1, 0]))
    a.merge_state([b])
    assert a.result() == 3.0


class _FunctionSubclass(FunctionMetric):
    """A subclass of a running-mean metric that overrides no update: still the running mean."""


def test_a_subclass_of_function_metric_merges() -> None:
    assert _FunctionSubclass.merges()
    a, b = _FunctionSubclass(_abs_error), _FunctionSubclass(_abs_error)
    a.update_state(np.zeros(2), np.array([1.0, 3.0]))
    b.update_state(np.zeros(1), np.array([5.0]))
    a.merge_state([b])
    assert a.result() == 3.0


@pytest.mark.parametrize(
    ("a", "b", "differs"),
    [
        (lambda: Precision(threshold=0.3), lambda: Precision(threshold=0.7), "threshold"),
        (lambda: TopKAccuracy(k=2), lambda: TopKAccuracy(k=3), "'k'"),
        (lambda: ConfusionMatrix(num_classes=3), lambda: ConfusionMatrix(num_classes=4), "num_classes"),
        (lambda: Precision(average="macro"), lambda: Precision(average="micro"), "average"),
    ],
)
def test_merging_metrics_configured_differently_is_refused(a, b, differs: str) -> None:
    # counts taken at another threshold or k would mix into a value that means nothing
    first, second = a(), b()
    with pytest.raises(ConfigError, match=f"configured alike.*{differs}"):
        first.merge_state([second])


def test_the_name_may_differ() -> None:
    a, b = Accuracy(name="acc"), Accuracy(name="val_acc")
    b.update_state(np.array([1]), np.array([[0.1, 0.9]]))
    a.merge_state([b])
    assert a.result() == 1.0
