"""The arguments every optimizer takes: the learning rate (given once, in one of three places) and the
gradient penalties (weight decay, clipping), checked before an optimizer keeps them."""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any

import numpy as np

from framework.base import schedules
from framework.errors import ConfigError

__all__ = ["check_penalties", "is_learning_rate", "rate_and_params"]


def rate_and_params(cls: type, params: Any, learning_rate: Any, lr: Any) -> tuple[Any, Any]:
    """``(params, learning_rate)`` from an optimizer's arguments: ``SGD(0.1)`` takes a rate as its first
    argument, ``lr`` is an alias of ``learning_rate``.

    Raises:
        ConfigError: the rate given in two of those places (naming both).
    """
    positional = is_learning_rate(params)
    given = [f"as the first argument ({params!r})"] if positional else []
    if not _is_default_rate(cls, learning_rate):
        given.append(f"as learning_rate={learning_rate!r}")
    if lr is not None:
        given.append(f"as lr={lr!r} (an alias of learning_rate)")
    if len(given) > 1:
        raise ConfigError(f"{cls.__name__}: the learning rate is given {' and '.join(given)}; pass it once")
    if positional:
        learning_rate, params = params, None
    if lr is not None:
        learning_rate = lr
    return params, learning_rate


def check_penalties(owner: str, weight_decay: Any, clipnorm: Any, clipvalue: Any) -> None:
    """Refuse a ``weight_decay`` that is not a finite number >= 0, a clip that is not a number > 0 or None.

    NumPy scalars are numbers; ``True`` is not.
    """
    if not schedules.is_rate(weight_decay):
        raise ConfigError(f"{owner}: weight_decay must be a finite number >= 0, got {weight_decay!r}")
    for label, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
        number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        if value is not None and not (number and value > 0):
            raise ConfigError(f"{owner}: {label} must be a number > 0 or None, got {value!r}")


def _is_default_rate(cls: type, value: Any) -> bool:
    """Whether ``value`` is the very default object of a ``learning_rate`` of ``cls``'s constructors."""
    return any(default is value for default in _default_rates(cls))


@functools.lru_cache(maxsize=256)
def _default_rates(cls: type) -> tuple[Any, ...]:
    """The default objects of the ``learning_rate`` arguments of ``cls``'s constructors (read once per
    class: ``inspect.signature`` on each constructor took 40 us of every optimizer made)."""
    inits = [vars(k)["__init__"] for k in cls.__mro__ if inspect.isfunction(vars(k).get("__init__"))]
    params = (inspect.signature(f).parameters.get("learning_rate") for f in inits)
    return tuple(p.default for p in params if p is not None and p.default is not inspect.Parameter.empty)


def is_learning_rate(value: Any) -> bool:
    """Whether a positional ``params`` is a rate: a number, schedule, its dict or a plain function."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (numbers.Real, schedules.Schedule)) or inspect.isfunction(value):
        return True
    return isinstance(value, dict) and "class_name" in value
