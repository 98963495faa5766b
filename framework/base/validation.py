"""Argument checks shared by the built-in plugins and open to third-party ones.

Each function takes the name of the object being configured (``owner``, e.g.
``"Conv2d"``) and of the argument (``arg``), returns the value in canonical
form, and otherwise raises :class:`~framework.errors.ConfigError` (or
:class:`~framework.errors.ShapeError` for arrays) naming both, the expected and
the received value. Use them in ``__init__`` so that a bad hyperparameter fails
where it is given::

    from framework.base.validation import positive_int, resolve_activation

    class MyLayer(Layer):
        def __init__(self, units: int, activation: Any = None) -> None:
            super().__init__()
            self.units = positive_int("MyLayer", "units", units)
            self.activation = resolve_activation("MyLayer", activation)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import ConfigError, DataError, FrameworkError, ShapeError
from framework.registry.manager import REGISTRY
from framework.registry.namespace import resolve

__all__ = [
    "check_bool",
    "check_choice",
    "int_tuple",
    "match_target_shape",
    "numeric_array",
    "positive_int",
    "positive_number",
    "real_number",
    "resolve_activation",
    "resolve_initializer",
    "unit_interval",
]


def positive_int(owner: str, arg: str, value: Any, allow_none: bool = False) -> int | None:
    """``value`` as an ``int > 0`` (``None`` passes when ``allow_none``); ``True``/``False`` are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{owner}: {arg} must be a positive integer, got {value!r}")
    return int(value)


def real_number(owner: str, arg: str, value: Any) -> float:
    """``value`` as a finite ``float`` (booleans refused), else a ConfigError naming ``owner`` and ``arg``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{owner}: {arg} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{owner}: {arg} must be finite, got {value!r}")
    return value


def positive_number(owner: str, arg: str, value: Any) -> float:
    """``value`` as a finite ``float > 0`` (booleans refused), else a ConfigError naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{owner}: {arg} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{owner}: {arg} must be a positive number, got {value!r}")
    return float(value)


def unit_interval(owner: str, arg: str, value: Any) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (booleans refused), else a ConfigError naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{owner}: {arg} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}: {arg} must be a number in [0, 1], got {value!r}")
    return float(value)


def int_tuple(owner: str, arg: str, value: Any, n: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints, each ``>= minimum``, as an ``n``-tuple.

    The per-axis form of ``kernel_size``, ``stride``, ``padding``...: ``3`` with
    ``n=2`` gives ``(3, 3)``, ``(3, 5)`` stays ``(3, 5)``.
    """
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in items
    ):
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        shape = "" if n == 1 else " or a pair of them"
        raise ConfigError(f"{owner}: {arg} must be {kind}{shape}, got {value!r}")
    return tuple(int(v) for v in items)


def check_bool(owner: str, arg: str, value: Any) -> bool:
    """``value`` as a ``bool``; only ``True``/``False`` (or NumPy booleans) pass, not ``0``/``1``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {arg} must be True or False, got {value!r}")
    return bool(value)


def check_choice(owner: str, arg: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``; the error lists the choices."""
    if value not in allowed:
        raise ConfigError(f"{owner}: {arg} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


def resolve_activation(owner: str, value: Any) -> Layer | None:
    """An activation layer from a registered name, class or instance (``None`` stays ``None``)."""
    act = resolve("activations", value)
    if act is not None and not isinstance(act, Layer):
        raise ConfigError(
            f"{owner}: activation must be a registered name, an activation class or instance, "
            f"got {value!r}; registered activations: {', '.join(REGISTRY.names('activations'))}"
        )
    return act


def resolve_initializer(owner: str, arg: str, value: Any) -> Any:
    """A callable initializer from a registered name, class or instance."""
    init = resolve("initializers", value)
    if not callable(init):
        raise ConfigError(
            f"{owner}: {arg} must be a registered name, an initializer class or instance, "
            f"got {value!r}; registered initializers: {', '.join(REGISTRY.names('initializers'))}"
        )
    return init


def match_target_shape(owner: str, y_pred: np.ndarray, y_true: Any) -> np.ndarray:
    """``y_true`` as an array of ``y_pred``'s shape; ``(N,)`` against ``(N, 1)`` (either way) is reshaped.

    For losses and metrics that compare element by element; any other mismatch
    is a ShapeError naming ``owner`` and both shapes. The dtype is left as given.
    """
    y_true = np.asarray(y_true)
    if y_true.shape != y_pred.shape:
        if y_pred.shape[-1:] == (1,) and y_true.shape == y_pred.shape[:-1]:
            y_true = y_true.reshape(y_pred.shape)
        elif y_true.shape[-1:] == (1,) and y_true.shape[:-1] == y_pred.shape:
            y_true = y_true.reshape(y_pred.shape)
        else:
            raise ShapeError(
                f"{owner}: y_true must have the shape of y_pred {y_pred.shape}, got {y_true.shape}"
            )
    return y_true


def numeric_array(owner: str, arg: str, value: Any, error: type[FrameworkError] = DataError) -> np.ndarray:
    """``value`` as an array of numbers (a boolean, integer or float dtype), else ``error`` naming
    ``owner`` and ``arg``.

    A NumPy array of such a dtype is returned as it is (no copy, no pass over it); a list is
    converted; an object array whose elements are all real numbers becomes float64. ``None``,
    strings, ragged lists, complex numbers and other objects are refused, so they cannot reach
    the arithmetic as a bare TypeError / ValueError or turn into a silent ``nan``.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    what = "None" if value is None else type(value).__name__
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # a ragged list
        raise error(f"{owner}: {arg} must be an array of numbers, got {what} ({exc})") from None
    if array.dtype.kind == "O" and all(isinstance(v, numbers.Real) for v in array.flat):
        array = array.astype(np.float64)
    if array.dtype.kind not in "biuf":
        if array.dtype.kind != "O":
            what = f"{what} of dtype {array.dtype}"
        if value is not None and array.size:
            bad = (v for v in array.flat if not isinstance(v, numbers.Real))
            first = next(bad, array.flat[0]) if array.dtype.kind == "O" else array.flat[0]
            what += f", e.g. {(first.item() if isinstance(first, np.generic) else first)!r}"
        raise error(f"{owner}: {arg} must be an array of numbers, got {what}")
    return array


def bounded_number(
    owner: str,
    arg: str,
    value: Any,
    *,
    low: float,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = True,
) -> float:
    """``value`` as a float between ``low`` and ``high`` (bounds open or closed), else ConfigError."""
    ok = (
        isinstance(value, (int, float, np.floating, np.integer))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
    if ok:
        ok = value > low if open_low else value >= low
        if high is not None:
            ok = ok and (value < high if open_high else value <= high)
    if not ok:
        upper = "inf)" if high is None else f"{high}{')' if open_high else ']'}"
        raise ConfigError(
            f"{owner}: {arg} must be a number in {'(' if open_low else '['}{low}, {upper}, got {value!r}"
        )
    return float(value)
