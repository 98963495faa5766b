"""How the loops batch the data: the batch size and shuffling a model allows
(full-batch layers), and a batch of an iterable made ready for the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError
from framework.training.batch_axis import check_batch_axis
from framework.training.data import ArrayData, resolve_dicts

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["batch_from_iterable", "batching", "check_positive_int", "full_batch_layer"]


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def full_batch_layer(model: Model) -> Any:
    """The first layer (searched recursively) declaring ``needs_full_batch = True``, or ``None``."""
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if getattr(layer, "needs_full_batch", False):
            return layer
        stack.extend(reversed(layer.children()))
    return None


def batching(
    owner: str, model: Model, data: Any, batch_size: int | None, shuffle: bool | None
) -> tuple[int, bool]:
    """``(batch_size, shuffle)`` resolved: 32 and shuffled, or full and in order for full-batch layers."""
    layer = full_batch_layer(model) if isinstance(data, ArrayData) else None
    if layer is None:
        size = 32 if batch_size is None else check_positive_int(f"{owner}: batch_size", batch_size)
        shuffled = True if shuffle is None else bool(shuffle)
        if isinstance(data, ArrayData):
            check_batch_axis(owner, model, data, size, shuffled)
        return size, shuffled
    n = data.n
    why = (
        f"{layer.describe()} needs the whole batch (needs_full_batch: e.g. a graph layer's adjacency "
        f"is fixed to the order of the {n} samples)"
    )
    if batch_size is not None and check_positive_int(f"{owner}: batch_size", batch_size) < n:
        raise ConfigError(
            f"{owner}: batch_size={batch_size} is smaller than the {n} samples, but {why}; leave "
            "batch_size unset (one full batch per step) and select samples with sample_weight"
        )
    if shuffle:
        raise ConfigError(
            f"{owner}: shuffle=True reorders the samples, but {why}; leave shuffle unset "
            "(full-batch models are not shuffled)"
        )
    return n, False


def batch_from_iterable(model: Model, xb: Any, yb: Any, wb: Any) -> tuple[Any, Any, Any]:
    """A batch of an iterable with dicts resolved and inputs cast to the model's dtype."""
    if isinstance(xb, dict) or isinstance(yb, dict) or isinstance(wb, dict):
        xb, yb, wb = resolve_dicts(model, xb, yb, wb)
    if wb is not None and model.multi_output and not isinstance(wb, (list, tuple)):
        wb = [wb] * model.num_outputs
    return model.cast_inputs(xb), yb, wb
