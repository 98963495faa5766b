"""Keras-named cross-entropies: probabilities by default, logits with ``from_logits=True``.

``binary_crossentropy``, ``categorical_crossentropy`` and
``sparse_categorical_crossentropy`` follow Keras's contract: with
``from_logits=False`` (the default) ``y_pred`` holds probabilities, the output
of a sigmoid / softmax layer, clipped into ``[1e-7, 1 - 1e-7]`` before the
log (and, for the categorical losses, first divided by their sum over the
class axis, as Keras does); with ``from_logits=True`` it holds logits and the
loss is computed as the PyTorch-style losses of :mod:`plugins.cross_entropy`
compute it. The class axis is 1 (``(N, C)`` or ``(N, C, d...)``, the
framework's channels-first layout).

A probabilities loss after its activation has a fused gradient,
:meth:`~framework.base.loss.Loss.backward_logits`: ``(p - t) * w / N`` with
respect to the logits, which ``Model.compile`` uses to skip the activation's
backward (stable where ``p`` saturates).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.loss import Loss
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError
from plugins.cross_entropy import BCEWithLogits, CrossEntropy
from plugins.loss_ops import EPSILON, broadcast_rows, check_smoothing, match_target

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy"]


def _check_flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


class _KerasCrossentropy(Loss):
    """``from_logits`` handling shared by the three Keras-named cross-entropies."""

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = _check_flag(type(self).__name__, "from_logits", from_logits)
        self.expects = "logits" if self.from_logits else "probabilities"
        self._delegate: Loss | None = None
        self._cache: tuple[np.ndarray, ...] | None = None

    def _check_probabilities(self, p: np.ndarray) -> None:
        """DataError unless ``p`` lies in ``[0, 1]`` (logits given to a probabilities loss)."""
        if p.size and (p.min() < 0.0 or p.max() > 1.0 + 1e-6):
            bad = p[(p < 0.0) | (p > 1.0 + 1e-6)].flat[0]
            raise DataError(
                f"{type(self).__name__}(from_logits=False): y_pred must be probabilities in [0, 1], "
                f"got {bad!r}; a model that outputs logits needs from_logits=True"
            )

    def _forward_delegate(
        self, delegate: Loss, z: np.ndarray, target: np.ndarray, sample_weight: Any
    ) -> float:
        """``from_logits=True``: ``delegate`` (a PyTorch-style loss) computes the loss on logits ``z``.

        ``sample_weight`` (``(N,)``) is checked here first, so a bad one is reported under this
        loss's name, not the delegate's.
        """
        sw = self._sample_weight(sample_weight, z.shape[0], z.dtype)
        self._delegate = delegate
        return delegate.forward(z, target, sw)

    def _require_cache(self) -> tuple[np.ndarray, ...]:
        if self._cache is None:
            raise NotBuiltError(f"{type(self).__name__}: call forward() before backward()")
        return self._cache

    def backward(self) -> np.ndarray:
        if self.from_logits:
            if self._delegate is None:
                raise NotBuiltError(f"{type(self).__name__}: call forward() before backward()")
            return self._delegate.backward()
        return self._backward_probabilities()

    def backward_logits(self) -> np.ndarray:
        if self.from_logits:
            raise NotImplementedError(
                f"{type(self).__name__}(from_logits=True) takes logits: backward() already is dL/dlogits"
            )
        return self._backward_logits()

    def _backward_probabilities(self) -> np.ndarray:
        raise NotImplementedError

    def _backward_logits(self) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


class BinaryCrossentropy(_KerasCrossentropy):
    """Binary cross-entropy, Keras's ``binary_crossentropy`` (PyTorch's ``BCELoss`` by default).

    With ``from_logits=False`` and ``pc = clip(p, 1e-7, 1 - 1e-7)``:
    ``l = -[y log pc + (1 - y) log(1 - pc)]``; with ``from_logits=True`` the
    stable :class:`~plugins.cross_entropy.BCEWithLogits` form of the same
    quantity. ``L = mean(w_i * l)`` over every element. Label smoothing
    replaces ``y`` by ``y (1 - eps) + eps / 2``.

    Args:
        from_logits: ``y_pred`` are logits (``True``) or probabilities
            (``False``, the default: the model ends in a sigmoid).
        label_smoothing: ``eps`` in ``[0, 1]``, default 0.0.

    Shape:
        - y_pred: ``(N, *)``; y_true: targets in ``[0, 1]`` of the same shape
          (``(N,)`` against ``(N, 1)`` is accepted).

    Gradient:
        probabilities: ``dL/dp = w (pc - y) / (pc (1 - pc)) / size`` inside
        the clip range, 0 outside it; logits: ``w (sigma(z) - y) / size``.
        Fused (sigmoid then this loss, :meth:`backward_logits`):
        ``dL/dz = w (p - y) / size``.

    Example:
        >>> import numpy as np
        >>> round(BinaryCrossentropy()(np.array([0.8, 0.4]), np.array([1.0, 0.0])), 4)
        0.367
    """

    link = "sigmoid"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__(from_logits)
        self.label_smoothing = check_smoothing(type(self).__name__, label_smoothing)

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        p = self._check_pred(y_pred)
        y = match_target(self, p, y_true)
        if y.size and (y.min() < 0 or y.max() > 1):
            bad = y[(y < 0) | (y > 1)].flat[0]
            raise DataError(f"BinaryCrossentropy: targets must be in [0, 1], got {bad}")
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            return self._forward_delegate(BCEWithLogits(), p, y, sample_weight)
        self._check_probabilities(p)
        sw = self._sample_weight(sample_weight, p.shape[0], p.dtype)
        pc = np.clip(p, EPSILON, 1.0 - EPSILON)
        values = -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))
        coef = np.full(p.shape, 1.0 / p.size, dtype=p.dtype)
        if sw is not None:
            coef *= broadcast_rows(sw, p.ndim)
        self._cache = (p, pc, y, coef)
        return float((values * coef).sum(dtype=np.float64))

    def _backward_probabilities(self) -> np.ndarray:
        p, pc, y, coef = self._require_cache()
        inside = (p >= EPSILON) & (p <= 1.0 - EPSILON)
        grad = (pc - y) / (pc * (1.0 - pc))
        grad *= coef
        return np.where(inside, grad, 0.0).astype(p.dtype, copy=False)

    def _backward_logits(self) -> np.ndarray:
        p, _, y, coef = self._require_cache()
        return (p - y) * coef

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        return config


class _Categorical(_KerasCrossentropy):
    """The probabilities path shared by the categorical and sparse losses (class axis 1)."""

    link = "softmax"

    def _forward_probabilities(
        self, p: np.ndarray, t: np.ndarray, valid: np.ndarray | None, sample_weight: Any
    ) -> float:
        """``sum(w l) / count`` with ``l = -sum_c t_c log clip(p_c / sum p)``; ``valid`` masks positions."""
        self._check_probabilities(p)
        sw = self._sample_weight(sample_weight, p.shape[0], p.dtype)
        total = p.sum(axis=1, keepdims=True)
        q = p / total
        qc = np.clip(q, EPSILON, 1.0 - EPSILON)
        per_position = -(t * np.log(qc)).sum(axis=1)
        count = per_position.size if valid is None else float(valid.sum())
        coef = np.full(per_position.shape, 1.0 / count if count else 0.0, dtype=p.dtype)
        if valid is not None:
            coef *= valid
        if sw is not None:
            coef *= broadcast_rows(sw, coef.ndim)
        self._cache = (q, qc, total, t, np.expand_dims(coef, 1))
        return float((per_position * coef).sum(dtype=np.float64))

    def _backward_probabilities(self) -> np.ndarray:
        q, qc, total, t, coef = self._require_cache()
        inside = (q >= EPSILON) & (q <= 1.0 - EPSILON)
        g = np.where(inside, -t / qc, 0.0).astype(q.dtype, copy=False)
        grad = g - (g * q).sum(axis=1, keepdims=True)
        grad /= total
        grad *= coef
        return grad

    def _backward_logits(self) -> np.ndarray:
        q, _, _, t, coef = self._require_cache()
        grad = q * t.sum(axis=1, keepdims=True)
        grad -= t
        grad *= coef
        return grad

    def _check_classes(self, p: np.ndarray) -> None:
        if p.ndim < 2:
            raise ShapeError(
                f"{type(self).__name__}: y_pred must be {self.expects} of shape (N, C) or (N, C, d...), "
                f"got {p.shape}"
            )


class CategoricalCrossentropy(_Categorical):
    """Categorical cross-entropy on one-hot targets, Keras's ``categorical_crossentropy``.

    With ``from_logits=False``, ``q = p / sum_c p_c`` and ``qc = clip(q,
    1e-7, 1 - 1e-7)``: ``l = -sum_c t_c log qc_c`` per sample (and position);
    with ``from_logits=True``, ``l = -sum_c t_c log softmax(z)_c`` as in
    :class:`~plugins.cross_entropy.CrossEntropy`. ``L = sum(w_i l) / N``.
    Label smoothing replaces ``t`` by ``t (1 - eps) + eps / C``.

    Args:
        from_logits: ``y_pred`` are logits (``True``) or probabilities
            (``False``, the default: the model ends in a softmax).
        label_smoothing: ``eps`` in ``[0, 1]``, default 0.0.

    Shape:
        - y_pred: ``(N, C)`` or ``(N, C, d...)``, classes on axis 1.
        - y_true: one-hot or probabilities of y_pred's shape (integer labels
          take ``sparse_categorical_crossentropy``).

    Gradient:
        probabilities: with ``g_c = -t_c / qc_c`` inside the clip range (else
        0), ``dL/dp_j = w (g_j - sum_c g_c q_c) / (N sum_c p_c)``; logits:
        ``w (softmax(z) sum_c t_c - t) / N``. Fused (softmax then this loss,
        :meth:`backward_logits`): ``dL/dz = w (p - t) / N``.

    Example:
        >>> import numpy as np
        >>> round(CategoricalCrossentropy()(np.array([[0.25, 0.75]]), np.array([[0.0, 1.0]])), 4)
        0.2877
    """

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__(from_logits)
        self.label_smoothing = check_smoothing(type(self).__name__, label_smoothing)

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        p = self._check_pred(y_pred)
        self._check_classes(p)
        t = np.asarray(y_true)
        if t.shape != p.shape:
            raise ShapeError(
                f"CategoricalCrossentropy: y_true must be one-hot of y_pred's shape {p.shape}, got "
                f"{t.shape}; integer labels take 'sparse_categorical_crossentropy'"
            )
        t = t.astype(p.dtype, copy=False)
        if self.from_logits:
            return self._forward_delegate(
                CrossEntropy(label_smoothing=self.label_smoothing), p, t, sample_weight
            )
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + self.label_smoothing / p.shape[1]
        return self._forward_probabilities(p, t, None, sample_weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        return config


class SparseCategoricalCrossentropy(_Categorical):
    """Categorical cross-entropy on integer labels, Keras's ``sparse_categorical_crossentropy``.

    The same loss as :class:`CategoricalCrossentropy` with ``t`` the one-hot
    of the label. Positions labelled ``ignore_class`` count in neither the
    sum nor the mean's denominator (Keras's rule, PyTorch's ``ignore_index``);
    if every position is ignored the loss and gradient are 0.

    Args:
        from_logits: ``y_pred`` are logits (``True``) or probabilities
            (``False``, the default: the model ends in a softmax).
        ignore_class: an integer label that contributes nothing, default
            ``None`` (every label must be in ``[0, C)``).

    Shape:
        - y_pred: ``(N, C)`` or ``(N, C, d...)``, classes on axis 1.
        - y_true: integer labels ``(N,)`` / ``(N, d...)`` (an ``(N, 1)``
          column is accepted).

    Gradient:
        as :class:`CategoricalCrossentropy`, with ``N`` the number of
        positions not ignored. Fused: ``dL/dz = w (p - onehot(y)) / N``.

    Example:
        >>> import numpy as np
        >>> round(SparseCategoricalCrossentropy()(np.array([[0.25, 0.75]]), np.array([1])), 4)
        0.2877
    """

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None) -> None:
        super().__init__(from_logits)
        if ignore_class is not None and (
            isinstance(ignore_class, bool) or not isinstance(ignore_class, (int, np.integer))
        ):
            raise ConfigError(
                "SparseCategoricalCrossentropy: ignore_class must be an integer or None, "
                f"got {ignore_class!r}"
            )
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    def _labels(self, p: np.ndarray, y_true: Any) -> np.ndarray:
        """Integer labels of shape ``(N, d...)``, validated against ``C``."""
        labels = np.asarray(y_true)
        label_shape = (p.shape[0], *p.shape[2:])
        if p.ndim == 2 and labels.shape == (p.shape[0], 1):
            labels = labels[:, 0]
        if labels.shape != label_shape:
            raise ShapeError(
                f"SparseCategoricalCrossentropy: y_true must be integer labels of shape {label_shape} for "
                f"y_pred of shape {p.shape}, got {labels.shape}; one-hot targets take "
                "'categorical_crossentropy'"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.issubdtype(labels.dtype, np.number) or not np.all(np.mod(labels, 1) == 0):
                raise DataError(
                    f"SparseCategoricalCrossentropy: labels must be integers, got dtype {labels.dtype} "
                    "with non-integral values"
                )
            labels = labels.astype(np.int64)
        classes = p.shape[1]
        bad = (labels < 0) | (labels >= classes)
        if self.ignore_class is not None:
            bad &= labels != self.ignore_class
        if np.any(bad):
            raise DataError(
                f"SparseCategoricalCrossentropy: label {int(labels[bad].flat[0])} is outside [0, {classes}) "
                f"for y_pred with C={classes} classes"
                + ("" if self.ignore_class is None else f" (and is not ignore_class={self.ignore_class})")
            )
        return labels

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        p = self._check_pred(y_pred)
        self._check_classes(p)
        labels = self._labels(p, y_true)
        ignored = None if self.ignore_class is None else labels == self.ignore_class
        if self.from_logits:
            if ignored is not None:
                labels = np.where(ignored, -100, labels)
            return self._forward_delegate(CrossEntropy(ignore_index=-100), p, labels, sample_weight)
        class_ids = np.arange(p.shape[1]).reshape((1, -1) + (1,) * (p.ndim - 2))
        t = (np.expand_dims(labels, 1) == class_ids).astype(p.dtype)
        valid = None
        if ignored is not None:
            valid = (~ignored).astype(p.dtype)
            t *= np.expand_dims(valid, 1)
        return self._forward_probabilities(p, t, valid, sample_weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.ignore_class is not None:
            config["ignore_class"] = self.ignore_class
        return config
