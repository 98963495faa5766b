"""What every loader and helper of :mod:`framework.datasets` shares.

Type aliases for the arguments (``Seed``, ``PathLike``, ``Arrays``) and the
validation of seeds, counts and sample axes, each raising a
:class:`~framework.errors.ConfigError` or :class:`~framework.errors.DataError`
that names the argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.errors import ConfigError, DataError
from framework.runtime.random import get_rng

__all__ = ["Arrays", "PathLike", "Seed"]

PathLike = str | os.PathLike[str]
"""A file or folder: a ``str`` or a ``pathlib.Path``."""

Seed = int | np.random.Generator | None
"""An int seed, a ``numpy.random.Generator``, or ``None`` for the framework's global generator."""

Arrays = np.ndarray | Sequence[np.ndarray] | dict[str, np.ndarray]
"""One array, or a list/tuple or dict of arrays (a model of several inputs or outputs)."""


def _generator(seed: Seed) -> np.random.Generator:
    """A Generator from an int seed, a Generator, or the framework's global one for ``None``."""
    if seed is None:
        return get_rng()
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise ConfigError(f"seed: expected an int >= 0, a numpy.random.Generator or None, got {seed!r}")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, refusing bools, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _path(name: str, value: Any) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``, e.g. a ``pathlib.Path``) as a Path, else a ConfigError."""
    if isinstance(value, (str, os.PathLike)):
        try:
            return Path(value)
        except TypeError:  # an os.PathLike of bytes
            pass
    raise ConfigError(
        f"{name}: expected a path (a str or a pathlib.Path), got {type(value).__name__} {value!r}"
    )


def _non_negative(name: str, value: Any) -> float:
    """``value`` as a float, refusing bools, non-numbers, negatives, infinities and NaN."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0 <= value < float("inf")
    ):
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _as_list(arrays: Arrays, name: str) -> tuple[list[np.ndarray], Any]:
    """``arrays`` as a list of arrays, and its form: ``False`` (one array), ``True`` (a list/tuple)
    or the keys of a dict (``{input name: array}``).

    Raises:
        DataError: an empty list or dict, or an iterator/generator (whose length is unknown).
    """
    if isinstance(arrays, dict):
        if not arrays:
            raise DataError(f"{name}: expected an array or a non-empty dict of arrays, got an empty dict")
        return [np.asarray(a) for a in arrays.values()], tuple(arrays)
    if isinstance(arrays, (list, tuple)):
        if not arrays:
            raise DataError(f"{name}: expected an array or a non-empty list of arrays, got an empty list")
        return [np.asarray(a) for a in arrays], True
    if isinstance(arrays, Iterator):
        raise DataError(
            f"{name}: expected an array, a list/tuple or a dict of arrays, got {type(arrays).__name__} "
            "(an iterator has no length to batch over); convert it first, e.g. np.asarray(list(it))"
        )
    return [np.asarray(arrays)], False


def _common_length(named: list[tuple[str, np.ndarray]], where: str) -> int:
    """The number of samples shared by the ``(label, array)`` pairs (a DataError if they differ)."""
    for label, array in named:
        if array.ndim == 0:
            raise DataError(f"{where}: {label} must have a sample axis, got a scalar")
    lengths = {label: len(array) for label, array in named}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{label}: {n}" for label, n in lengths.items())
        raise DataError(f"{where}: every array needs the same number of samples (first axis), got {listing}")
    return next(iter(lengths.values()))
