"""``AUC``: the area under the ROC or precision-recall curve over a whole epoch.

Two ways to compute it:

- ``num_thresholds=200`` (the default, Keras's ``AUC``): weighted true / false
  positive counts at fixed thresholds in ``[0, 1]``, accumulated batch by
  batch in constant memory; ROC by the trapezoid rule, PR by Keras's
  interpolation (Davis & Goadrich, 2006). An approximation: on 1000 random
  samples it is within 1e-3 of scikit-learn's ``roc_auc_score`` and within
  2e-2 of ``average_precision_score`` (a different summation).
- ``num_thresholds=None``: exact; keeps every score of the epoch and equals
  ``roc_auc_score`` / ``average_precision_score`` (to rounding, 1e-12).

Scores are probabilities; on logits (``from_logits=True``, or a loss that
expects logits bound by ``compile``) a sigmoid (the overflow-free form the
``Sigmoid`` layer uses; or, for a softmax link, a softmax over axis 1) is
applied first. Several columns are flattened against their one-hot /
multi-label targets, as Keras's ``AUC(multi_label=False)`` does
(scikit-learn's ``average="micro"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.metric import Metric, _batch_size, _sample_weight
from framework.base.metric_state import peers_of, state_array, state_field
from framework.base.validation import numeric_array
from framework.errors import ConfigError, DataError, ShapeError
from plugins.activation_math import stable_sigmoid
from plugins.metric_ops import binary_decision_shape, binary_targets, class_targets

__all__ = ["AUC"]

_EPS = 1e-7


def _scores_and_targets(metric: AUC, y_pred: Any, y_true: Any, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat probabilities, 0/1 targets and weights of one batch."""
    y_pred = np.asarray(numeric_array("AUC", "y_pred", y_pred), dtype=np.float64)
    n = y_pred.shape[0]
    logits = metric.from_logits or metric.output_expects == "logits"
    if binary_decision_shape(y_pred):
        y_true = numeric_array("AUC", "y_true", y_true)
        if y_true.shape not in ((n,), (n, 1)):
            raise ShapeError(
                f"AUC: binary y_pred of shape {y_pred.shape} needs y_true of shape ({n},) or ({n}, 1), "
                f"got {y_true.shape}"
            )
        scores, targets = y_pred.reshape(n), binary_targets(metric, y_true.reshape(n))
        if logits:
            scores = stable_sigmoid(scores)
        return scores, targets, weight
    if y_true is not None and np.shape(y_true) == y_pred.shape:
        targets = binary_targets(metric, y_true)
    else:
        labels = class_targets(metric, y_pred, y_true)
        class_ids = np.arange(y_pred.shape[1]).reshape((1, -1) + (1,) * (y_pred.ndim - 2))
        targets = np.expand_dims(labels, 1) == class_ids
    if logits and metric.output_link == "softmax":
        e = np.exp(y_pred - y_pred.max(axis=1, keepdims=True))
        y_pred = e / e.sum(axis=1, keepdims=True)
    elif logits:
        y_pred = stable_sigmoid(y_pred)
    per_sample = y_pred[0].size if n else 1
    return y_pred.reshape(-1), targets.reshape(-1), np.repeat(weight, per_sample)


class AUC(Metric):
    """Area under the ROC or precision-recall curve of a binary (or flattened) classifier.

    Args:
        curve: ``"ROC"`` (default) or ``"PR"``.
        num_thresholds: thresholds of Keras's approximation, ``>= 2``, default
            200; ``None`` for the exact area (equal to scikit-learn's).
        from_logits: ``y_pred`` are logits (also set by ``compile`` through
            ``bind_output`` when the loss expects logits).
        name: the history key, default ``"auc"``.

    Shape:
        - y_pred: ``(N,)`` / ``(N, 1)`` scores, or ``(N, C)`` class scores.
        - y_true: ``(N,)`` targets in ``{0, 1}`` / class labels, or one-hot /
          multi-label of y_pred's shape.

    ``result()`` is ``nan`` until both a positive and a negative were seen.
    """

    def __init__(
        self,
        curve: str = "ROC",
        num_thresholds: int | None = 200,
        from_logits: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not isinstance(curve, str) or curve.upper() not in ("ROC", "PR"):
            raise ConfigError(f"AUC: curve must be 'ROC' or 'PR', got {curve!r}")
        if num_thresholds is not None and (
            isinstance(num_thresholds, bool)
            or not isinstance(num_thresholds, (int, np.integer))
            or num_thresholds < 2
        ):
            raise ConfigError(
                f"AUC: num_thresholds must be an integer >= 2 or None (exact), got {num_thresholds!r}"
            )
        if not isinstance(from_logits, (bool, np.bool_)):
            raise ConfigError(f"AUC: from_logits must be True or False, got {from_logits!r}")
        self.curve = curve.upper()
        self.num_thresholds = None if num_thresholds is None else int(num_thresholds)
        self.from_logits = bool(from_logits)
        if self.num_thresholds is not None:
            inner = [(i + 1) / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
            self.thresholds = np.array([-_EPS, *inner, 1.0 + _EPS])
        self.reset_state()

    def reset_state(self) -> None:
        if self.num_thresholds is None:
            self._scores: list[np.ndarray] = []
            self._targets: list[np.ndarray] = []
            self._weights: list[np.ndarray] = []
        else:
            self._pos = np.zeros(self.num_thresholds + 1)  # weight of positives per bucket
            self._neg = np.zeros(self.num_thresholds + 1)

    def get_state(self) -> dict[str, Any]:
        """Bucketed: ``pos`` and ``neg``, the weight of positives and negatives per bucket. Exact
        (``num_thresholds=None``): ``scores``, ``targets`` and ``weights`` of every sample so far."""
        if self.num_thresholds is not None:
            return {"num_thresholds": self.num_thresholds, "pos": self._pos.copy(), "neg": self._neg.copy()}
        parts = (self._scores, self._targets, self._weights)
        scores, targets, weights = (np.concatenate(p) if p else np.zeros(0) for p in parts)
        return {"num_thresholds": None, "scores": scores, "targets": targets.astype(bool), "weights": weights}

    def set_state(self, state: dict[str, Any]) -> None:
        thresholds = state_field(self, state, "num_thresholds")
        if thresholds != self.num_thresholds:
            raise ConfigError(
                f"AUC.set_state: the state is of num_thresholds={thresholds!r}, "
                f"this AUC has {self.num_thresholds!r}"
            )
        if self.num_thresholds is not None:
            size = self.num_thresholds + 1
            pos, neg = (state_array(self, state, k, np.float64) for k in ("pos", "neg"))
            if pos.shape != (size,) or neg.shape != (size,):
                raise ShapeError(
                    f"AUC.set_state: pos and neg must have shape ({size},), got {pos.shape}, {neg.shape}"
                )
            self._pos, self._neg = pos, neg
            return
        scores = state_array(self, state, "scores", np.float64)
        targets = state_array(self, state, "targets", bool)
        weights = state_array(self, state, "weights", np.float64)
        if not (scores.ndim == 1 and scores.shape == targets.shape == weights.shape):
            raise ShapeError(
                f"AUC.set_state: scores, targets and weights must be 1-D of one length, got "
                f"{scores.shape}, {targets.shape}, {weights.shape}"
            )
        self.reset_state()
        if scores.size:
            self._scores.append(scores)
            self._targets.append(targets)
            self._weights.append(weights)

    def merge_state(self, metrics: Any) -> None:
        """Add the counts of ``metrics`` (Keras's name; see :meth:`Metric.merge_state`); all must be
        configured as this AUC (the same ``num_thresholds`` and curve; ConfigError otherwise)."""
        for other in peers_of(self, metrics):
            if self.num_thresholds is None:
                self._scores += other._scores
                self._targets += other._targets
                self._weights += other._weights
            else:
                self._pos += other._pos
                self._neg += other._neg

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        n = _batch_size(self, y_pred)
        weight = np.ones(n) if sample_weight is None else _sample_weight(self, sample_weight, n)
        scores, targets, weight = _scores_and_targets(self, y_pred, y_true, weight)
        if self.num_thresholds is None:
            self._scores.append(scores)
            self._targets.append(targets)
            self._weights.append(weight)
            return
        if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
            raise DataError(
                f"AUC: scores must be probabilities in [0, 1], got {scores[(scores < 0) | (scores > 1)][0]}; "
                "for logits pass from_logits=True"
            )
        # bucket b: the number of thresholds strictly below the score; predicted positive at t_k iff b > k.
        bucket = np.searchsorted(self.thresholds, scores, side="left")
        size = self.num_thresholds + 1
        self._pos += np.bincount(bucket, weights=weight * targets, minlength=size)
        self._neg += np.bincount(bucket, weights=weight * ~targets, minlength=size)

    def result(self) -> float:
        if self.num_thresholds is None:
            return self._exact()
        # counts at each threshold t_k: positives with bucket > k
        tp = np.cumsum(self._pos[::-1])[::-1][1:]
        fp = np.cumsum(self._neg[::-1])[::-1][1:]
        positives, negatives = self._pos.sum(), self._neg.sum()
        if positives == 0 or (self.curve == "ROC" and negatives == 0):
            return float("nan")
        fn = positives - tp
        if self.curve == "ROC":
            tpr, fpr = tp / positives, fp / negatives
            return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
        return _interpolated_pr_auc(tp, fp, fn)

    def _exact(self) -> float:
        if not self._scores:
            return float("nan")
        scores = np.concatenate(self._scores)
        targets = np.concatenate(self._targets)
        weight = np.concatenate(self._weights)
        order = np.argsort(-scores, kind="mergesort")
        scores, targets, weight = scores[order], targets[order], weight[order]
        last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct score
        tps = np.cumsum(weight * targets)[last]
        fps = np.cumsum(weight * ~targets)[last]
        if tps[-1] <= 0 or (self.curve == "ROC" and fps[-1] <= 0):
            return float("nan")
        if self.curve == "ROC":
            tpr = np.r_[0.0, tps / tps[-1]]
            fpr = np.r_[0.0, fps / fps[-1]]
            return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        precision = tps / (tps + fps)
        recall = np.r_[0.0, tps / tps[-1]]
        return float(np.sum(np.diff(recall) * precision))

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "curve": self.curve, "num_thresholds": self.num_thresholds}
        if self.from_logits:
            config["from_logits"] = True
        return config


def _interpolated_pr_auc(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Keras's PR-AUC: precision interpolated between thresholds (Davis & Goadrich, 2006)."""
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = np.divide(dtp, dp, out=np.zeros_like(dtp), where=dp > 0)
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = np.divide(p[:-1], p[1:], out=np.ones_like(dtp), where=both)
    den = tp[1:] + fn[1:]
    increment = slope * (dtp + intercept * np.log(ratio))
    return float(np.sum(np.divide(increment, den, out=np.zeros_like(dtp), where=den > 0)))
