"""PyTorch-style cross-entropies from logits: ``CrossEntropy``, ``MaskedCrossEntropy``, ``BCEWithLogits``.

These take raw scores (logits) and fuse the softmax or sigmoid into the loss,
which is both cheaper and numerically stable; a model trained with them
outputs logits from ``predict``. They are what PyTorch's ``CrossEntropyLoss``
and ``BCEWithLogitsLoss`` compute, gradients included. (The Keras-named
losses, which take probabilities by default, are in
:mod:`plugins.keras_losses`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.loss import Loss
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError
from plugins.loss_ops import broadcast_rows, check_smoothing, match_target

__all__ = ["CrossEntropy", "MaskedCrossEntropy", "BCEWithLogits"]


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits (PyTorch's ``CrossEntropyLoss``).

    With ``p = softmax(z)`` over the class axis 1, the target distribution
    ``t`` (one-hot of the label, or the given probabilities), the smoothed
    target ``q = (1 - eps) t + eps / C`` and class weights ``w``:

    ``l = -sum_c w_c q_c log p_c`` per sample (and position), and
    ``L = sum(l) / sum_i s_i`` with ``s_i = sum_c w_c t_ic`` -- the weight of
    sample ``i``'s class, so for integer or one-hot targets this is PyTorch's
    weighted mean, and without weights the plain mean. (For soft targets with
    weights PyTorch divides by ``N`` instead; here the expected weight keeps
    integer, one-hot and soft targets consistent.) Ignored positions count in
    neither sum; if every position is ignored the loss and gradient are 0.

    Args:
        weight: a weight per class, shape ``(C,)``, default ``None`` (all 1).
        label_smoothing: ``eps`` in ``[0, 1]``, default 0.0.
        ignore_index: an integer label that contributes nothing, default
            -100; it may be a class id in ``[0, C)``, as in PyTorch.

    Shape:
        - y_pred: logits ``(N, C)`` or ``(N, C, d1, ...)``.
        - y_true: integer labels ``(N,)`` / ``(N, d1, ...)`` (an ``(N, 1)``
          column is accepted), or probabilities / one-hot of y_pred's shape.

    Gradient:
        ``dL/dz_k = (p_k * sum_c w_c q_c - w_k q_k) / sum_i s_i``, which is
        ``(p - q) / N`` without class weights. The log-softmax is computed as
        ``z - max(z) - log(sum(exp(z - max(z))))`` so large logits stay finite.

    Example:
        >>> import numpy as np
        >>> round(CrossEntropy()(np.array([[0.0, 0.0]]), np.array([1])), 4)
        0.6931
    """

    expects = "logits"
    link = "softmax"

    def __init__(self, weight: Any = None, label_smoothing: float = 0.0, ignore_index: int = -100) -> None:
        name = type(self).__name__
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float64)
            if weight.ndim != 1 or weight.size == 0 or not np.all(np.isfinite(weight)) or np.any(weight < 0):
                raise ConfigError(
                    f"{name}: weight must be a 1-D array of finite non-negative class weights, got {weight!r}"
                )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ConfigError(f"{name}: ignore_index must be an integer, got {ignore_index!r}")
        self.weight = weight
        self.label_smoothing = check_smoothing(name, label_smoothing)
        self.ignore_index = int(ignore_index)
        self._cache: tuple[np.ndarray, ...] | None = None

    def _ignored(self, labels: np.ndarray) -> np.ndarray:
        return labels == self.ignore_index

    def _position_mask(self, logits: np.ndarray) -> np.ndarray | None:
        return None

    def _labels_to_targets(self, logits: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        """One-hot targets from integer labels; ignored labels give an all-zero row."""
        if not np.issubdtype(y_true.dtype, np.integer):
            if not np.issubdtype(y_true.dtype, np.number) or not np.all(np.mod(y_true, 1) == 0):
                raise DataError(
                    f"{type(self).__name__}: labels of shape {y_true.shape} must be integers, "
                    f"got dtype {y_true.dtype} with non-integral values"
                )
            y_true = y_true.astype(np.int64)
        classes = logits.shape[1]
        keep = ~self._ignored(y_true)
        bad = keep & ((y_true < 0) | (y_true >= classes))
        if np.any(bad):
            raise DataError(
                f"{type(self).__name__}: label {int(y_true[bad].flat[0])} is outside [0, {classes}) "
                f"for y_pred with C={classes} classes; labels must be in [0, C) "
                f"(or {self.ignore_index} to ignore a sample)"
            )
        class_ids = np.arange(classes).reshape((1, classes) + (1,) * (logits.ndim - 2))
        # an ignored label may be a class id (ignore_index in [0, C)): its row is zeroed all the same
        return ((np.expand_dims(y_true, 1) == class_ids) & np.expand_dims(keep, 1)).astype(logits.dtype)

    def _targets(self, logits: np.ndarray, y_true: Any) -> tuple[np.ndarray, bool]:
        """The target distribution ``t`` of logits' shape and whether it came from labels."""
        y_true = np.asarray(y_true)
        n, classes = logits.shape[:2]
        label_shape = (n, *logits.shape[2:])
        if y_true.shape == logits.shape and not (classes == 1 and np.issubdtype(y_true.dtype, np.integer)):
            return y_true.astype(logits.dtype, copy=False), False
        if logits.ndim == 2 and y_true.shape == (n, 1) and classes > 1:
            y_true = y_true[:, 0]
        if y_true.shape == label_shape:
            return self._labels_to_targets(logits, y_true), True
        raise ShapeError(
            f"{type(self).__name__}: y_true must be integer labels of shape {label_shape} or "
            f"probabilities of y_pred's shape {logits.shape}, got {y_true.shape}"
        )

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        z = self._check_pred(y_pred)
        if sample_weight is None and self._plain_labels(z, y_true):
            return self._forward_labels(z, y_true)
        name = type(self).__name__
        if z.ndim < 2:
            raise ShapeError(f"{name}: y_pred must be logits of shape (N, C) or (N, C, d...), got {z.shape}")
        classes = z.shape[1]
        if self.weight is not None and self.weight.shape != (classes,):
            raise ShapeError(f"{name}: weight has shape {self.weight.shape}, y_pred has C={classes} classes")
        target, from_labels = self._targets(z, y_true)
        mask = self._position_mask(z)
        if mask is not None:
            target = target * broadcast_rows(mask.astype(z.dtype), z.ndim)  # (N,) over (N, C, d...)
        sw = self._sample_weight(sample_weight, z.shape[0], z.dtype)

        with np.errstate(over="ignore", invalid="ignore"):  # a spread past the float range; all -inf
            shifted = z - z.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        total = probs.sum(axis=1, keepdims=True)
        log_p = shifted
        log_p -= np.log(total)
        probs /= total

        class_shape = (1, classes) + (1,) * (z.ndim - 2)
        class_w = None if self.weight is None else self.weight.astype(z.dtype).reshape(class_shape)
        if self.weight is None and not from_labels:
            position_shape = z.shape[:1] + z.shape[2:]
            valid = (
                np.ones(position_shape, dtype=z.dtype)
                if mask is None  # mask: one flag per sample (N,), spread over the positions (N, d...)
                else np.broadcast_to(broadcast_rows(np.asarray(mask, z.dtype), z.ndim - 1), position_shape)
            )
            norm_terms = valid
        else:
            weighted_t = target if class_w is None else target * class_w
            norm_terms = weighted_t.sum(axis=1)
            valid = (target.sum(axis=1) > 0).astype(z.dtype)
        if self.label_smoothing:
            eps = self.label_smoothing
            target = target * (1.0 - eps) + (eps / classes) * np.expand_dims(valid, 1)
        wq = target if class_w is None else target * class_w

        denominator = float(norm_terms.sum(dtype=np.float64))
        # only classes of target weight count (PyTorch gathers the label's log p): a -inf logit
        # elsewhere adds 0, not 0 * -inf = NaN; a row of NaN / inf logits without target gets p = 0
        terms = np.multiply(wq, log_p, out=np.zeros_like(log_p), where=wq != 0)
        per_position, wq_sum = -terms.sum(axis=1), wq.sum(axis=1)
        unusable = np.isnan(total) & (np.expand_dims(wq_sum, 1) == 0)
        if unusable.any():
            np.copyto(probs, 0.0, where=unusable)
        coef = np.full(per_position.shape, 0.0 if denominator == 0 else 1.0 / denominator, dtype=z.dtype)
        if sw is not None:
            coef *= broadcast_rows(sw, coef.ndim)
        self._cache = (probs, wq, coef, wq_sum)
        return float((per_position * coef).sum(dtype=np.float64))

    def _plain_labels(self, z: np.ndarray, y_true: Any) -> bool:
        """Whether the common case applies: (N, C) logits, N labels in [0, C) not ignored, no weights."""
        return (
            self.weight is None
            and not self.label_smoothing
            and type(self)._position_mask is CrossEntropy._position_mask
            and type(self)._ignored is CrossEntropy._ignored
            and z.ndim == 2
            and isinstance(y_true, np.ndarray)
            and y_true.shape == z.shape[:1]
            and np.issubdtype(y_true.dtype, np.integer)
            and z.shape[0] > 0
            and int(y_true.min()) >= 0
            and int(y_true.max()) < z.shape[1]
            and not (0 <= self.ignore_index < z.shape[1] and np.any(y_true == self.ignore_index))
        )

    def _forward_labels(self, z: np.ndarray, labels: np.ndarray) -> float:
        """``mean_i (log sum_c exp z_ic - z_i,y_i)``; backward gives ``(p - onehot(y)) / N``."""
        with np.errstate(over="ignore", invalid="ignore"):  # as in forward
            shifted = z - z.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        total = probs.sum(axis=1)
        rows = np.arange(len(labels))
        per_sample = np.log(total) - shifted[rows, labels]
        probs /= total[:, None]
        self._cache = (probs, rows, labels)  # type: ignore[assignment]
        return float(per_sample.mean(dtype=np.float64))

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise NotBuiltError(f"{type(self).__name__}: call forward() before backward()")
        if len(self._cache) == 3:  # the plain-labels case
            probs, rows, labels = self._cache  # type: ignore[misc]
            inv_n = probs.dtype.type(1.0 / len(labels))
            grad = probs * inv_n
            grad[rows, labels] -= inv_n
            return grad
        probs, wq, coef, wq_sum = self._cache
        grad = probs * np.expand_dims(wq_sum, 1)
        grad -= wq
        grad *= np.expand_dims(coef, 1)
        return grad

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.weight is not None:
            config["weight"] = self.weight.tolist()
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        if self.ignore_index != -100:
            config["ignore_index"] = self.ignore_index
        return config


class MaskedCrossEntropy(CrossEntropy):
    """Cross-entropy over the selected nodes only (semi-supervised node classification).

    The loss is :class:`CrossEntropy` restricted to the positions where
    ``mask`` is true and the label is neither ``-1`` nor ``ignore_index``:
    ``L = sum_{i in M} l_i / |M|`` (class-weighted as in CrossEntropy), and
    the gradient is zero on every other node. With an empty selection the loss
    and gradient are 0.

    Args:
        mask: boolean array of length ``N`` (the nodes in the loss), or
            ``None`` to select by labels alone. ``forward(..., mask=...)``
            overrides it for one call.
        weight, label_smoothing, ignore_index: as in :class:`CrossEntropy`.

    Shape:
        - y_pred: logits ``(N, C)`` (all nodes of the graph), or ``(N, C, d...)``.
        - y_true: labels ``(N,)`` / ``(N, d...)`` (``-1`` = unlabelled) or
          one-hot of y_pred's shape.
        - mask: ``(N,)`` bool; it selects (or drops) all of a sample's positions.

    Gradient:
        ``dL/dz_i = (p_i - q_i) / |M|`` for ``i`` in ``M``, 0 elsewhere.
    """

    def __init__(
        self, mask: Any = None, weight: Any = None, label_smoothing: float = 0.0, ignore_index: int = -100
    ) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing, ignore_index=ignore_index)
        self.mask = self._as_mask(mask)
        self._call_mask: np.ndarray | None = None

    def _as_mask(self, mask: Any) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.ndim != 1 or not (mask.dtype == bool or np.all((mask == 0) | (mask == 1))):
            raise ConfigError(
                f"{type(self).__name__}: mask must be a 1-D boolean array (one entry per node), "
                f"got shape {mask.shape} dtype {mask.dtype}"
            )
        return mask.astype(bool)

    def _ignored(self, labels: np.ndarray) -> np.ndarray:
        return (labels == self.ignore_index) | (labels == -1)

    def _position_mask(self, logits: np.ndarray) -> np.ndarray | None:
        mask = self._call_mask if self._call_mask is not None else self.mask
        if mask is not None and mask.shape != logits.shape[:1]:
            raise ShapeError(
                f"{type(self).__name__}: mask has shape {mask.shape}, y_pred has {logits.shape[0]} nodes; "
                f"expected ({logits.shape[0]},)"
            )
        return mask

    def forward(
        self,
        y_pred: np.ndarray,
        y_true: np.ndarray,
        sample_weight: np.ndarray | None = None,
        mask: Any = None,
    ) -> float:
        self._call_mask = self._as_mask(mask)
        try:
            return super().forward(y_pred, y_true, sample_weight)
        finally:
            self._call_mask = None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.mask is not None:
            config["mask"] = self.mask.tolist()
        return config


class BCEWithLogits(Loss):
    """Sigmoid binary cross-entropy from logits (PyTorch's ``BCEWithLogitsLoss``).

    With ``sigma`` the logistic function and ``softplus(x) = log(1 + e^x)``:
    ``l = -[pw * y * log sigma(z) + (1 - y) * log(1 - sigma(z))]
    = (1 - y) * z + (1 + (pw - 1) * y) * softplus(-z)``, and ``L = mean(l)``
    over every element, computed as ``(1 - y) max(z, 0) + pw y max(-z, 0) +
    (1 + (pw - 1) y) log1p(exp(-|z|))``: finite for any finite logit and,
    its terms being non-negative, accurate where PyTorch's form cancels
    (``y = 0``, ``z = -12``: 7 % off in float32, ``z < -17``: 0).

    Args:
        pos_weight: weight ``pw`` of the positive term, a number (or a
            one-element array) for every element, or an array broadcast over
            the last axis (one per label), default ``None`` (1).

    Shape:
        - y_pred: logits ``(N, *)``; y_true: targets in ``[0, 1]`` of the same
          shape (``(N,)`` against ``(N, 1)`` is accepted).

    Gradient:
        ``dL/dz = ((1 - y) sigma(z) - pw y sigma(-z)) / size``, which is
        ``(sigma(z) - y) / size`` without ``pos_weight``.

    Registered as ``bce_with_logits`` (aliases ``BCEWithLogitsLoss``,
    ``binary_cross_entropy_with_logits``). The name ``binary_crossentropy``
    is Keras's loss, which takes probabilities unless ``from_logits=True``.
    """

    expects = "logits"
    link = "sigmoid"

    def __init__(self, pos_weight: Any = None) -> None:
        if pos_weight is not None:
            pos_weight = np.asarray(pos_weight, dtype=np.float64)
            if pos_weight.ndim > 1 or not np.all(np.isfinite(pos_weight)) or np.any(pos_weight < 0):
                raise ConfigError(
                    "BCEWithLogits: pos_weight must be a non-negative number or 1-D array, "
                    f"got {pos_weight!r}"
                )
        self.pos_weight = pos_weight
        self._cache: tuple[Any, ...] | None = None

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        z = self._check_pred(y_pred)
        y = match_target(self, z, y_true)
        if y.size and (y.min() < 0 or y.max() > 1):
            bad = y[(y < 0) | (y > 1)].flat[0]
            raise DataError(f"BCEWithLogits: targets must be in [0, 1], got {bad}")
        sw = self._sample_weight(sample_weight, z.shape[0], z.dtype)
        coef = None
        if self.pos_weight is not None:
            pw = self.pos_weight.astype(z.dtype)
            if pw.ndim == 1 and pw.shape != (1,) and z.shape[-1:] != pw.shape:
                raise ShapeError(
                    f"BCEWithLogits: pos_weight has shape {pw.shape}, expected ({z.shape[-1]},) "
                    f"to match y_pred's last axis {z.shape} (or (1,), or a number, for every element)"
                )
            coef = 1.0 + (pw - 1.0) * y
        e = np.exp(-np.abs(z))
        inv, positive = 1.0 / (1.0 + e), z >= 0
        sigmoid, sigmoid_neg = np.where(positive, inv, e * inv), np.where(positive, e * inv, inv)
        # l = (1 - y) max(z, 0) + pw y max(-z, 0) + (1 + (pw - 1) y) log1p(e^-|z|): no term is negative,
        # so nothing cancels (the textbook (1 - y) z + softplus(-z) loses every digit at y = 0, z << 0)
        pos_y = y if coef is None else pw * y
        log_term = np.log1p(e)
        values = (1.0 - y) * np.maximum(z, 0.0) + pos_y * np.maximum(-z, 0.0)
        values += log_term if coef is None else coef * log_term
        if sw is not None:
            values *= broadcast_rows(sw, values.ndim)
        self._cache = (sigmoid, sigmoid_neg, y, pos_y, sw)
        return float(values.mean(dtype=np.float64))

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise NotBuiltError("BCEWithLogits: call forward() before backward()")
        sigmoid, sigmoid_neg, y, pos_y, sw = self._cache
        grad = (1.0 - y) * sigmoid  # = sigma(z) - y without pos_weight, as sums of same-signed terms
        grad -= pos_y * sigmoid_neg
        grad *= 1.0 / grad.size
        if sw is not None:
            grad *= broadcast_rows(sw, grad.ndim)
        return grad

    def get_config(self) -> dict[str, Any]:
        return {} if self.pos_weight is None else {"pos_weight": self.pos_weight.tolist()}
