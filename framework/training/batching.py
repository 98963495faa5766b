"""How the loops batch the data: the batch size and shuffling a model allows
(full-batch layers); an iterable of batches brings its own.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError
from framework.training.batch_axis import check_batch_axis
from framework.training.data import ArrayData

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["batching", "check_positive_int", "full_batch_layer"]


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
    """``(batch_size, shuffle)`` resolved: 32 and shuffled, or full and in order for full-batch layers.

    ``shuffle="batch"`` (Keras's shuffle for HDF5 data) is ``True``: an h5py
    dataset is read batch by batch with sorted indices anyway. An iterable of
    batches gives ``(0, False)``: its batches are its own.

    Raises:
        ConfigError: a bad ``batch_size`` or ``shuffle``; a ``batch_size`` for an iterable of
            batches; ``shuffle=True`` or a ``batch_size`` below the sample
            count for a full-batch model.
    """
    if shuffle is not None and not isinstance(shuffle, (bool, np.bool_)):
        if shuffle != "batch":
            raise ConfigError(f"{owner}: shuffle must be True, False or 'batch', got {shuffle!r}")
        shuffle = True  # Keras's chunked shuffle for HDF5: a full permutation, read sorted per batch
    if not isinstance(data, ArrayData):
        if batch_size is not None:
            raise ConfigError(
                f"{owner}: batch_size={batch_size!r} does not apply to an iterable of batches, which "
                "brings its own batches; leave batch_size unset (or batch the arrays with "
                "framework.datasets.batches)"
            )
        if shuffle:
            warnings.warn(
                f"{owner}: shuffle=True is ignored for an iterable of batches, which yields them in its "
                "own order; shuffle inside the iterable (framework.datasets.batches(..., shuffle=True))",
                UserWarning,
                stacklevel=4,
            )
        return 0, False
    layer = full_batch_layer(model)
    if layer is None:
        size = 32 if batch_size is None else check_positive_int(f"{owner}: batch_size", batch_size)
        shuffled = True if shuffle is None else bool(shuffle)
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
