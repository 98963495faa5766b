"""``fit(class_weight=...)``: a ``{class: weight}`` dict turned into per-sample weights.

Keras's rule: one output only (several outputs take ``sample_weight`` per
output); the weight of each sample's label multiplies its ``sample_weight``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["class_weight_table", "combine_weights"]


def class_weight_table(class_weight: dict[int, float] | None, model: Model) -> np.ndarray | None:
    """``{class: weight}`` as a lookup table (``None`` when not given).

    Raises:
        ConfigError: a malformed dict, or a model of several outputs (use
            ``sample_weight`` per output there, as in Keras).
    """
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise ConfigError(
            f"fit: class_weight must be a non-empty dict {{class: weight}}, got {class_weight!r}"
        )
    if model.num_outputs > 1:
        raise ConfigError(
            "fit: class_weight applies to a model of one output; for several outputs pass "
            "sample_weight (a list or a dict of per-sample weights per output)"
        )
    size = max(int(k) for k in class_weight) + 1
    table = np.ones(size, dtype=np.float64)
    for k, w in class_weight.items():
        if int(k) < 0:
            raise ConfigError(f"fit: class_weight keys must be class indices >= 0, got {k!r}")
        table[int(k)] = float(w)
    return table


def combine_weights(table: np.ndarray, y: Any, sample_weight: Any) -> np.ndarray:
    """The class weight of each sample's label, times its ``sample_weight`` if any.

    The label is ``y`` itself for class indices (``(N,)``, or an ``(N, 1)``
    column of integers, or of whole numbers when there are more than two
    classes), the argmax of one-hot rows, and ``y > 0.5`` for one column of
    binary targets.
    """
    if y.ndim == 1:
        labels = y
    elif y.shape[-1] > 1:
        labels = y.argmax(axis=-1)
    else:
        column = y[:, 0]
        indices = np.issubdtype(column.dtype, np.integer) or (
            len(table) > 2 and bool(np.all(column == np.round(column)))
        )
        labels = column if indices else (column > 0.5).astype(np.int64)
    labels = labels.astype(np.int64, copy=False)
    if labels.min() < 0 or labels.max() >= len(table):
        weights = np.ones(len(labels), dtype=np.float64)
        inside = (labels >= 0) & (labels < len(table))
        weights[inside] = table[labels[inside]]
    else:
        weights = table[labels]
    return weights if sample_weight is None else weights * sample_weight
