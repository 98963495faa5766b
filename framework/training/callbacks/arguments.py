"""Validation of the callbacks' numeric arguments.

Each check returns the value as a plain Python ``int`` or ``float`` (NumPy
scalars are accepted) or raises a :class:`~framework.errors.ConfigError` naming
the callback, the argument, what it must be and the value received.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from framework.errors import ConfigError

__all__ = ["check_count", "check_number"]


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
