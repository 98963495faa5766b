"""Stateful epoch metrics from confusion counts: ``Precision``, ``Recall``, ``F1Score``, ``ConfusionMatrix``.

Each keeps (sample-weighted) counts of true / predicted classes over the
whole epoch and computes its value from them in ``result()``, so the epoch
value is exact (equal to scikit-learn's on all the epoch's predictions), not
a mean of batch values. Predictions follow what the model outputs (see
:meth:`~framework.base.metric.Metric.bind_output`): one score per sample is
thresholded (0 on logits, 0.5 on probabilities), several classes take the
``argmax`` over axis 1, and a sigmoid over several columns (multi-label) is
thresholded element by element.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.metric import Metric, _batch_size, _sample_weight
from framework.base.metric_state import peers_of, state_array, state_field
from framework.errors import ConfigError, DataError, ShapeError
from plugins.metric_ops import decisions

__all__ = ["ConfusionMatrix", "F1Score", "Precision", "Recall"]

_AVERAGES = ("binary", "macro", "micro", "weighted", None)


def _check_threshold(owner: str, threshold: Any) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ConfigError(f"{owner}: threshold must be a finite number or None, got {threshold!r}")
    return float(threshold)


class _ConfusionCounts(Metric):
    """Epoch state: a ``(C, C)`` confusion matrix (single-label) or per-label counts (multi-label)."""

    def __init__(self, threshold: float | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.threshold = _check_threshold(type(self).__name__, threshold)
        self.reset_state()

    def reset_state(self) -> None:
        self._mode: str | None = None
        self._classes = 0
        self._matrix: np.ndarray | None = None  # multiclass: rows true, columns predicted
        self._label_counts: np.ndarray | None = None  # multilabel: rows tp, fp, fn
        self._seen: np.ndarray | None = None  # classes present in y_true or y_pred (unweighted)

    def _start(self, mode: str, classes: int) -> None:
        if self._mode is None:
            self._mode, self._classes = mode, classes
            self._matrix = np.zeros((classes, classes)) if mode == "multiclass" else None
            self._label_counts = np.zeros((3, classes)) if mode == "multilabel" else None
            self._seen = np.zeros(classes, dtype=bool)
        elif (mode, classes) != (self._mode, self._classes):
            raise ShapeError(
                f"{type(self).__name__}: this epoch's earlier batches were {self._mode} with "
                f"{self._classes} classes, this batch is {mode} with {classes}; call reset_state() between "
                "different problems"
            )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        n = _batch_size(self, y_pred)
        weight = np.ones(n) if sample_weight is None else _sample_weight(self, sample_weight, n)
        mode, pred, true, classes, weight = decisions(self, y_pred, y_true, self.threshold, weight)
        self._check_batch(mode, classes)
        self._start(mode, classes)
        if mode == "multiclass":
            assert self._matrix is not None and self._seen is not None
            cells = np.bincount(true * classes + pred, weights=weight, minlength=classes * classes)
            self._matrix += cells.reshape(classes, classes)
            self._seen[true] = True
            self._seen[pred] = True
        else:
            assert self._label_counts is not None and self._seen is not None
            w = weight[:, None]
            self._label_counts[0] += (w * (pred & true)).sum(axis=0)
            self._label_counts[1] += (w * (pred & ~true)).sum(axis=0)
            self._label_counts[2] += (w * (~pred & true)).sum(axis=0)
            self._seen[:] = True

    def _check_batch(self, mode: str, classes: int) -> None:
        """Refuse a batch before it is counted (the state must not change); nothing to check here."""

    def get_state(self) -> dict[str, Any]:
        """``mode`` (``None`` before any batch), ``classes``, and the counts: ``matrix`` (multiclass)
        or ``label_counts`` (multilabel), and ``seen``, the classes present (copies)."""
        return {
            "mode": self._mode,
            "classes": self._classes,
            "matrix": None if self._matrix is None else self._matrix.copy(),
            "label_counts": None if self._label_counts is None else self._label_counts.copy(),
            "seen": None if self._seen is None else self._seen.copy(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mode = state_field(self, state, "mode")
        if mode not in (None, "multiclass", "multilabel"):
            raise ConfigError(
                f"{type(self).__name__}.set_state: mode must be None, 'multiclass' or 'multilabel', "
                f"got {mode!r}"
            )
        self.reset_state()
        if mode is None:
            return
        classes = state_field(self, state, "classes")
        if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
            raise ConfigError(
                f"{type(self).__name__}.set_state: classes must be a positive integer, got {classes!r}"
            )
        classes = int(classes)
        self._start(mode, classes)
        multiclass = mode == "multiclass"
        key, shape = ("matrix", (classes, classes)) if multiclass else ("label_counts", (3, classes))
        for name, want, dtype in ((key, shape, np.float64), ("seen", (classes,), bool)):
            try:
                value = state_array(self, state, name, dtype)
            except ConfigError:
                self.reset_state()
                raise
            if value.shape != want:
                self.reset_state()
                raise ShapeError(
                    f"{type(self).__name__}.set_state: {name} must have shape {want} for {classes} classes, "
                    f"got {value.shape}"
                )
            setattr(self, f"_{name}", value)

    def merge_state(self, metrics: Any) -> None:
        """Add the counts of ``metrics`` (Keras's name; see :meth:`Metric.merge_state`).

        Raises:
            ShapeError: a metric that counted another problem (multiclass against
                multilabel, or another number of classes); nothing is merged then.
        """
        peers = [m for m in peers_of(self, metrics) if m._mode is not None]
        first = self if self._mode is not None else (peers[0] if peers else self)
        mode, classes = first._mode, first._classes
        for other in peers:
            if (other._mode, other._classes) != (mode, classes):
                raise ShapeError(
                    f"{type(self).__name__}.merge_state: one metric counted {mode} with {classes} classes, "
                    f"another {other._mode} with {other._classes}; only counts of one problem merge"
                )
        for other in peers:
            assert other._mode is not None and other._seen is not None
            self._start(other._mode, other._classes)
            assert self._seen is not None
            if other._matrix is not None and self._matrix is not None:
                self._matrix += other._matrix
            if other._label_counts is not None and self._label_counts is not None:
                self._label_counts += other._label_counts
            self._seen |= other._seen

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-class true positives, false positives and false negatives, shape ``(C,)`` each."""
        if self._matrix is not None:
            tp = np.diag(self._matrix).copy()
            return tp, self._matrix.sum(axis=0) - tp, self._matrix.sum(axis=1) - tp
        assert self._label_counts is not None
        return self._label_counts[0], self._label_counts[1], self._label_counts[2]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


class _AveragedScore(_ConfusionCounts):
    """A per-class score averaged as scikit-learn's ``average=`` does."""

    def __init__(
        self, average: str | None = "binary", threshold: float | None = None, name: str | None = None
    ) -> None:
        if average not in _AVERAGES:
            raise ConfigError(f"{type(self).__name__}: average must be one of {_AVERAGES}, got {average!r}")
        self.average = average
        self.scalar = average is not None
        super().__init__(threshold=threshold, name=name)

    def _score(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def result(self) -> Any:
        if self._mode is None:
            return float("nan") if self.average is not None else np.zeros(0)
        tp, fp, fn = self._counts()
        if self.average is None:
            return self._score(tp, fp, fn)
        if self.average == "binary":
            if self._mode != "multiclass" or self._classes != 2:
                raise DataError(
                    f"{type(self).__name__}(average='binary') needs a binary problem (one score per sample "
                    f"or 2 classes), got {self._mode} with {self._classes} classes; use average='macro', "
                    "'micro' or 'weighted'"
                )
            return float(self._score(tp, fp, fn)[1])
        if self.average == "micro":
            return float(self._score(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0])
        assert self._seen is not None
        keep = self._seen
        scores = self._score(tp, fp, fn)[keep]
        if self.average == "macro":
            return float(scores.mean()) if scores.size else 0.0
        support = (tp + fn)[keep]
        return float((scores * support).sum() / support.sum()) if support.sum() else 0.0

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "average": self.average}
        if self.threshold is not None:
            config["threshold"] = self.threshold
        return config


_ARGS_DOC = """
    Args:
        average: ``"binary"`` (default; the score of class 1, for one score per
            sample or 2 classes), ``"micro"`` (from the counts summed over
            classes), ``"macro"`` (the unweighted mean over the classes present
            in targets or predictions), ``"weighted"`` (the mean weighted by
            each class's support), or ``None`` (an array, one per class;
            ``scalar`` is then False). As scikit-learn's ``average=``, with
            ``zero_division=0``.
        threshold: decision threshold for binary / multi-label scores in
            ``y_pred``'s units, default ``None`` (0 on logits, 0.5 on
            probabilities).
        name: the history key.

    Shape:
        - y_pred: ``(N,)`` / ``(N, 1)`` binary scores, ``(N, C)`` /
          ``(N, C, d...)`` class scores, or ``(N, K)`` multi-label scores
          after a bound sigmoid.
        - y_true: ``(N,)`` labels or targets in ``{0, 1}``, or one-hot of
          y_pred's shape.
"""


class Precision(_AveragedScore):
    """Precision ``tp / (tp + fp)`` over the epoch, equal to ``sklearn.metrics.precision_score``."""

    __doc__ = (__doc__ or "") + "\n" + _ARGS_DOC

    def _score(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        return _ratio(tp, tp + fp)


class Recall(_AveragedScore):
    """Recall ``tp / (tp + fn)`` over the epoch, equal to ``sklearn.metrics.recall_score``."""

    __doc__ = (__doc__ or "") + "\n" + _ARGS_DOC

    def _score(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        return _ratio(tp, tp + fn)


class F1Score(_AveragedScore):
    """F1 ``2 tp / (2 tp + fp + fn)`` per class over the epoch, equal to ``sklearn.metrics.f1_score``."""

    __doc__ = (__doc__ or "") + "\n" + _ARGS_DOC

    def _score(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        return _ratio(2 * tp, 2 * tp + fp + fn)


class ConfusionMatrix(_ConfusionCounts):
    """The ``(C, C)`` confusion matrix over the epoch: rows true class, columns predicted class.

    Equal to ``sklearn.metrics.confusion_matrix(y_true, y_pred,
    labels=range(C), sample_weight=...)`` as float64 counts (sums of sample
    weights). One score per sample gives the 2 x 2 matrix of classes 0 and 1.

    Its result is an array (``scalar = False``): ``fit``'s ``History`` keeps
    the epoch's matrix under the metric's key, one array per epoch, as Keras
    does for array-valued metrics; ``evaluate`` returns it; the progress line
    does not print it.

    Args:
        num_classes: ``C``; default ``None``: taken from y_pred (2 for one
            score per sample).
        threshold: as :class:`Precision`.
        name: the history key, default ``"confusion_matrix"``.
    """

    scalar = False

    def __init__(
        self, num_classes: int | None = None, threshold: float | None = None, name: str | None = None
    ) -> None:
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2
        ):
            raise ConfigError(
                f"ConfusionMatrix: num_classes must be an integer >= 2 or None, got {num_classes!r}"
            )
        self.num_classes = None if num_classes is None else int(num_classes)
        super().__init__(threshold=threshold, name=name)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if self.output_link == "sigmoid" and np.ndim(y_pred) == 2 and np.shape(y_pred)[1] > 1:
            raise DataError(
                "ConfusionMatrix: multi-label outputs have one 2 x 2 matrix per label; not supported"
            )
        super().update_state(y_true, y_pred, sample_weight)

    def _check_batch(self, mode: str, classes: int) -> None:
        if self.num_classes is not None and classes != self.num_classes:
            raise ShapeError(
                f"ConfusionMatrix: num_classes={self.num_classes}, but y_pred has {classes} classes; "
                f"give y_pred {self.num_classes} class scores or leave num_classes=None"
            )

    def result(self) -> np.ndarray:
        if self._matrix is None:
            size = self.num_classes or 0
            return np.zeros((size, size))
        return self._matrix.copy()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        if self.threshold is not None:
            config["threshold"] = self.threshold
        return config
