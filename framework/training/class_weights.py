"""``fit(class_weight=...)``: a ``{class: weight}`` dict turned into per-sample weights.

Keras's rule: one output only (several outputs take ``sample_weight`` per
output); the weight of each sample's label multiplies its ``sample_weight``.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["ClassWeights", "class_weight_table", "combine_weights"]

_MAX_CLASS = int(np.iinfo(np.int64).max)  # labels are looked up as int64


class ClassWeights:
    """The classes of a ``class_weight`` dict (sorted) and their weights; any other class weighs 1.

    Held as two arrays of one entry per key, not a table indexed by class, so a
    large class index costs no memory. ``size`` is the largest class plus one.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = values[order]
        self.size = int(self.keys[-1]) + 1

    def lookup(self, labels: np.ndarray) -> np.ndarray:
        """The weight of each label (``int64`` array), 1 for a class that has none."""
        where = np.minimum(np.searchsorted(self.keys, labels), len(self.keys) - 1)
        hit = self.keys[where] == labels
        return np.where(hit, self.values[where], 1.0)


def _class_index(key: Any) -> int:
    """A ``class_weight`` key as a class index: an integer (or a whole float) ``>= 0``."""
    whole = isinstance(key, numbers.Real) and not isinstance(key, (bool, np.bool_))
    if whole and not isinstance(key, numbers.Integral):
        whole = math.isfinite(key) and float(key).is_integer()
    if not whole:
        raise ConfigError(
            f"fit: class_weight keys must be class indices (integers >= 0), got {key!r} "
            f"({type(key).__name__})"
        )
    if key < 0:
        raise ConfigError(f"fit: class_weight keys must be class indices >= 0, got {key!r}")
    if key > _MAX_CLASS:
        raise ConfigError(f"fit: class_weight key {key!r} is beyond any class index (at most {_MAX_CLASS})")
    return int(key)


def _weight(key: Any, value: Any) -> float:
    """A ``class_weight`` value as a finite float (NumPy scalars accepted, booleans refused)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"fit: class_weight[{key!r}] must be a finite number, got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(value):
        raise ConfigError(
            f"fit: class_weight[{key!r}] must be a finite number, got {value!r}; "
            "the loss and every weight would turn NaN"
        )
    return float(value)


def _output_classes(model: Model) -> int | None:
    """The width of the model's output where known without running it (built or functional), else None."""
    shape: Any = None
    if callable(getattr(model, "layer_output_shapes", None)):
        shapes = model.layer_output_shapes()  # type: ignore[attr-defined]
        shape = shapes[-1] if shapes else None
    elif getattr(model, "_graph", None) is not None:
        shape = model.output_shape(None)
    if not isinstance(shape, tuple) or len(shape) < 2 or not isinstance(shape[-1], (int, np.integer)):
        return None
    return int(shape[-1])


def class_weight_table(class_weight: dict[int, float] | None, model: Model) -> ClassWeights | None:
    """``{class: weight}`` as a :class:`ClassWeights` lookup (``None`` when not given).

    When the model's output width ``C`` is known before training (a built or
    functional model) and above 1, the targets' classes are ``0 .. C-1``
    (one-hot columns or sparse labels, which the loss checks) and a key
    outside them is refused. A single-column output (binary, or integer
    labels read as they are) takes any key.

    Raises:
        ConfigError: a malformed dict (a key that is not a class index, a
            weight that is not a finite number, a class the output cannot
            have), or a model of several outputs (use ``sample_weight`` per
            output there, as in Keras).
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
    classes = _output_classes(model)
    keys, values = [], []
    for k, w in class_weight.items():
        index = _class_index(k)
        if classes is not None and classes > 1 and index >= classes:
            raise ConfigError(
                f"fit: class_weight has class {k!r}, but the model's output has {classes} classes "
                f"(0 to {classes - 1}); its keys are class indices"
            )
        keys.append(index)
        values.append(_weight(k, w))
    return ClassWeights(np.array(keys, dtype=np.int64), np.array(values, dtype=np.float64))


def combine_weights(table: ClassWeights, y: Any, sample_weight: Any) -> np.ndarray:
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
            table.size > 2 and bool(np.all(column == np.round(column)))
        )
        labels = column if indices else (column > 0.5).astype(np.int64)
    weights = table.lookup(labels.astype(np.int64, copy=False))
    return weights if sample_weight is None else weights * sample_weight
