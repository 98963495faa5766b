"""Feeding arrays to a model in mini-batches: :func:`batches`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.datasets._common import Arrays, Seed, _as_list, _common_length, _generator, _positive_int
from framework.errors import ConfigError

__all__ = ["batches"]


def batches(
    x: Arrays,
    y: Arrays | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: Seed = None,
    drop_last: bool = False,
) -> Iterator[Any]:
    """Iterate over mini-batches of ``x`` (and ``y``), one pass over the data.

    Every sample appears exactly once per pass (except the last
    ``n % batch_size`` samples when ``drop_last``). With ``shuffle`` the order
    is a permutation drawn from ``seed``, so the same seed gives the same
    batches.

    Args:
        x: an array of shape ``(N, ...)``, or a list/tuple or a dict
            (``{input name: array}``) of such arrays for a model of several
            inputs.
        y: targets, same form as ``x`` (default ``None``: yield ``x`` batches
            only).
        batch_size: samples per batch (default 32); the last batch may be
            smaller.
        shuffle: visit the samples in random order (default ``False``).
        seed: int, Generator or ``None`` (the framework's global generator).
        drop_last: skip a final incomplete batch (default ``False``).

    Yields:
        ``(x_batch, y_batch)``, or ``x_batch`` when ``y`` is ``None``; each of
        shape ``(B, ...)`` with ``B <= batch_size``; a list where the input
        was a list or tuple, a dict with the same keys where it was a dict.
        Unshuffled batches are views, shuffled ones copies.

    Raises:
        DataError: if the arrays differ in length, or ``x`` / ``y`` is an
            iterator (its length is unknown).
        ConfigError: for a bad ``batch_size``, or a ``shuffle`` or
            ``drop_last`` that is not a bool.
    """
    batch_size = _positive_int("batches: batch_size", batch_size)
    for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ConfigError(f"batches: {name} must be True or False, got {flag!r}")
    xs, x_form = _as_list(x, "batches: x")
    ys, y_form = _as_list(y, "batches: y") if y is not None else ([], False)
    named = [(_label("x", x_form, i), a) for i, a in enumerate(xs)]
    named += [(_label("y", y_form, i), a) for i, a in enumerate(ys)]
    n = _common_length(named, "batches")
    order = _generator(seed).permutation(n) if shuffle else None
    return _batch_iterator(xs, x_form, ys if y is not None else None, y_form, n, batch_size, order, drop_last)


def _label(name: str, form: Any, i: int) -> str:
    """How messages name array ``i`` of ``x`` or ``y``: ``x``, ``x[1]`` or ``x['image']``."""
    if form is False:
        return name
    return f"{name}[{form[i]!r}]" if isinstance(form, tuple) else f"{name}[{i}]"


def _rebuild(parts: list[np.ndarray], form: Any) -> Any:
    """One batch in the form the data was given: an array, a list, or a dict with the same keys."""
    if form is False:
        return parts[0]
    return dict(zip(form, parts)) if isinstance(form, tuple) else parts


def _batch_iterator(
    xs: list[np.ndarray],
    x_form: Any,
    ys: list[np.ndarray] | None,
    y_form: Any,
    n: int,
    batch_size: int,
    order: np.ndarray | None,
    drop_last: bool,
) -> Iterator[Any]:
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index: Any = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        xb = _rebuild([a[index] for a in xs], x_form)
        if ys is None:
            yield xb
        else:
            yield xb, _rebuild([a[index] for a in ys], y_form)
