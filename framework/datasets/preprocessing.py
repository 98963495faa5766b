"""Array transforms applied before training: :func:`one_hot` and :func:`standardize`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from framework.datasets._common import _positive_int
from framework.errors import ConfigError, DataError

__all__ = ["one_hot", "standardize"]


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """One-hot encode integer class labels: ``out[..., k] = (labels == k)``.

    Args:
        labels: integer labels of any shape ``S`` (floats are accepted when
            they hold whole numbers).
        num_classes: number of classes ``C`` (default ``None``:
            ``labels.max() + 1``).
        dtype: dtype of the result (default float32).

    Returns:
        An array of shape ``S + (C,)``.

    Raises:
        DataError: for non-integer, negative or ``>= num_classes`` labels
            (naming the first offending value and its position).
    """
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ConfigError(f"one_hot: dtype must be a NumPy dtype such as 'float32', got {dtype!r}") from None
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not (
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    ):
        raise DataError(f"one_hot: labels must be integers, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"one_hot: labels must be whole numbers, got {labels[where].item()!r} at index {where}"
            )
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
        num_classes = max(num_classes, 0)
    else:
        num_classes = _positive_int("one_hot: num_classes", num_classes)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"one_hot: labels must be in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got {labels[where].item()!r} at index {where}"
        )
    return _scatter_ones(labels.astype(np.int64), num_classes, dtype)


def _scatter_ones(labels: np.ndarray, num_classes: int, dtype: np.dtype) -> np.ndarray:
    """``np.eye(num_classes)[labels]`` without the ``num_classes ** 2`` identity, refusing what cannot fit."""
    shape = (*labels.shape, num_classes)
    nbytes = labels.size * num_classes * dtype.itemsize
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): rely on the allocation failing
        physical = None
    try:
        if physical is not None and nbytes > physical:
            raise MemoryError
        out = np.zeros(shape, dtype=dtype)
    except (MemoryError, ValueError):
        raise ConfigError(
            f"one_hot: num_classes={num_classes} for {labels.size} labels needs an array of shape {shape} "
            f"({nbytes:,} bytes of {dtype}), more than this machine can hold; check num_classes"
        ) from None
    out.reshape(labels.size, num_classes)[np.arange(labels.size), labels.ravel()] = 1
    return out


def standardize(
    x: Any,
    mean: Any = None,
    std: Any = None,
    axis: int | tuple[int, ...] | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift and scale to zero mean and unit variance: ``(x - mean) / std``.

    Compute the statistics on the training set and pass them back for the test
    set: ``x_tr, m, s = standardize(x_train)``; ``x_te, _, _ =
    standardize(x_test, m, s)``. A feature that is constant in ``x`` (its
    variance within rounding error, as scikit-learn's ``StandardScaler``
    decides) gets ``std = 1``: it is only centred.

    Args:
        x: array of shape ``(N, ...)``.
        mean: statistics to apply (default ``None``: computed from ``x``);
            give both ``mean`` and ``std`` or neither.
        std: see ``mean``; every entry must be positive.
        axis: axes the statistics are taken over (default 0, per feature; use
            ``(0, 2, 3)`` for per-channel statistics of NCHW images, ``None``
            for one scalar).

    Returns:
        ``(x_std, mean, std)``: ``x_std`` of ``x``'s shape and float dtype
        (float32 for integer input); ``mean`` and ``std`` keep the reduced
        axes as size 1, so they broadcast against ``x``.

    Raises:
        ConfigError: if only one of ``mean`` / ``std`` is given, ``std`` has
            a non-positive entry, or ``axis`` is not an axis of ``x``.
        DataError: if ``x`` is not real numbers, the statistics would be
            taken over 0 values, or ``mean`` / ``std`` do not broadcast
            against ``x``.
    """
    x = np.asarray(x)
    if x.dtype != np.bool_ and not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise DataError(f"standardize: x must hold real numbers, got dtype {x.dtype}")
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    if (mean is None) != (std is None):
        raise ConfigError("standardize: give both mean and std (the training statistics) or neither")
    if mean is None:
        mean, std = _statistics(x, _axes(axis, x.ndim))
        mean, std = mean.astype(out_dtype), std.astype(out_dtype)
    else:
        try:
            mean, std = np.asarray(mean, dtype=out_dtype), np.asarray(std, dtype=out_dtype)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"standardize: mean and std must be numbers or arrays of numbers ({exc})"
            ) from exc
        if not np.all(std > 0):
            raise ConfigError(f"standardize: std must be positive everywhere, got min {float(std.min())!r}")
        for name, stat in (("mean", mean), ("std", std)):
            try:
                shape = np.broadcast_shapes(x.shape, stat.shape)
            except ValueError as exc:
                raise DataError(
                    f"standardize: {name} of shape {stat.shape} does not broadcast against "
                    f"x of shape {x.shape}"
                ) from exc
            if shape != x.shape:
                raise DataError(
                    f"standardize: {name} of shape {stat.shape} would change x's shape {x.shape} to {shape}"
                )
    x_std = (x.astype(out_dtype) - mean) / std
    return x_std.astype(out_dtype, copy=False), mean, std


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints or ``None`` for all) as distinct non-negative axes of ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in items) or not all(
        -ndim <= a < ndim for a in items
    ):
        raise ConfigError(
            f"standardize: axis: expected an int, a tuple of ints in {-ndim}..{ndim - 1} (x has {ndim} axes) "
            f"or None, got {axis!r}"
        )
    axes = tuple(int(a) % ndim for a in items)
    if len(set(axes)) != len(axes):
        raise ConfigError(f"standardize: axis: every axis may appear once, got {axis!r}")
    return axes


def _statistics(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``x`` over ``axes`` (kept as size 1), in float64; std 1 for constant features.

    A feature counts as constant when its variance is within the rounding error of
    computing it (scikit-learn's ``StandardScaler`` rule), so a column of one
    repeated value is centred to exactly 0, not divided by a rounding residue.
    """
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count == 0:
        raise DataError(f"standardize: cannot compute statistics over 0 values (x has shape {x.shape})")
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = x64.var(axis=axes, keepdims=True)
    low = x64.min(axis=axes, keepdims=True)
    mean = np.where(low == x64.max(axis=axes, keepdims=True), low, mean)  # exactly constant: its value
    eps = np.finfo(np.float64).eps
    constant = var <= count * eps * var + (count * mean * eps) ** 2
    std = np.sqrt(var)
    return mean, np.where(constant | ~(std > 0), 1.0, std)
