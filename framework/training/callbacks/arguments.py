"""Validation of the callbacks' arguments: counts, numbers, flags, ``verbose`` and file paths.

Each check returns the value in canonical form (a plain Python ``int``,
``float``, ``bool`` or ``str``; NumPy scalars are accepted) or raises a
:class:`~framework.errors.ConfigError` naming the callback, the argument, what
it must be and the value received.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from framework.base.validation import check_bool
from framework.errors import ConfigError

__all__ = ["check_bool", "check_count", "check_number", "check_path", "check_verbose"]


def check_count(owner: str, arg: str, value: Any) -> int:
    """``value`` as an ``int >= 0`` (``patience``, ``cooldown``, ``start_from_epoch``).

    Raises:
        ConfigError: a bool, a non-integer (``2.5``, ``"3"``) or a negative number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{owner}: {arg} must be an integer >= 0, got {value!r}")
    return int(value)


def check_number(owner: str, arg: str, value: Any, low: float | None = 0.0) -> float:
    """``value`` as a finite ``float``, at least ``low`` unless ``low`` is ``None``.

    Raises:
        ConfigError: a bool, a non-number, NaN, an infinity, or a value below ``low``.
    """
    bound = "" if low is None else f" >= {low:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (low is not None and value < low)
    ):
        raise ConfigError(f"{owner}: {arg} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_verbose(owner: str, value: Any) -> int:
    """A callback's ``verbose`` as ``0`` (silent), ``1`` or ``2`` (print), as an ``int``.

    As ``fit``'s ``verbose`` (:func:`~framework.training.callbacks.progress.resolve_verbose`,
    less ``"auto"``): ``True``/``False`` and strings are refused, NumPy numbers accepted.

    Raises:
        ConfigError: any other value.
    """
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not number or value not in (0, 1, 2):
        raise ConfigError(f"{owner}: verbose must be 0, 1 or 2, got {value!r}")
    return int(value)


def check_path(owner: str, arg: str, value: Any) -> str:
    """``value`` (a ``str``, ``bytes`` or ``os.PathLike``) as a non-empty ``str`` path.

    Raises:
        ConfigError: ``None``, another type (a number is not taken as a file name) or an empty path.
    """
    try:
        path = os.fsdecode(value)
    except TypeError:
        raise ConfigError(f"{owner}: {arg} must be a path (a str or os.PathLike), got {value!r}") from None
    if not path:
        raise ConfigError(f"{owner}: {arg} must be a non-empty path, got {value!r}")
    return path
