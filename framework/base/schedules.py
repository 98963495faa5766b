"""Learning-rate schedules: callables ``schedule(step) -> lr``.

Any of these can be given as an optimizer's ``learning_rate``
(``SGD(learning_rate=StepDecay(0.1, step_size=1000))``); the optimizer
evaluates it at its step count (``optimizer.iterations``, starting at 0)
before every update. A schedule is plain data: ``get_config()`` gives its
arguments, and :func:`get` rebuilds one from the
``{"class_name": ..., "config": ...}`` form that optimizers save, looking the
class up only among the schedules of this module and the ``custom_objects``
of ``load_model`` (a config never imports anything). An optimizer checks each
rate a schedule gives it (:func:`rate_at`): NaN, infinite or negative rates
stop training with a :class:`~framework.errors.ConfigError`.

Example:
    >>> from framework.base.schedules import CosineDecay, WarmUp
    >>> sched = WarmUp(CosineDecay(0.1, decay_steps=100), warmup_steps=10)
    >>> round(sched(4), 4), round(sched(10), 4)
    (0.05, 0.1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.errors import ConfigError
from framework.registry import namespace

__all__ = [
    "Schedule",
    "StepDecay",
    "ExponentialDecay",
    "CosineDecay",
    "WarmUp",
    "check_rate_value",
    "is_rate",
    "check_step_count",
    "rate_at",
    "get",
    "serialize",
]


def _check_rate(owner: str, arg: str, value: Any) -> float:
    """``value`` as a plain float (NumPy scalars accepted, so a config stays JSON data)."""
    if not is_rate(value):
        raise ConfigError(f"{owner}: {arg} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_flag(owner: str, arg: str, value: Any) -> bool:
    """``value`` as a plain bool; a string such as ``"False"`` is refused, not taken as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {arg} must be True or False, got {value!r}")
    return bool(value)


def _power(base: float, exponent: float) -> float:
    """``base ** exponent``, ``inf`` past the float range (a rate growing with ``base > 1``), as torch's."""
    try:
        return float(base**exponent)
    except OverflowError:
        return math.inf


def is_rate(value: Any) -> bool:
    """Whether ``value`` is a real number (NumPy's too, not a bool), finite and ``>= 0``."""
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and float(value) >= 0
    )


def check_rate_value(owner: str, value: Any, step: int) -> float:
    """A rate a schedule returned at ``step``, as a float; a :class:`ConfigError` naming ``owner`` if bad.

    A real number (NumPy scalars and 0-d arrays too) that is finite and ``>= 0``
    is accepted. Optimizers check every rate a schedule gives them this way, so a
    schedule going NaN, negative or infinite stops training with this error
    instead of writing NaN into the weights.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if not is_rate(value):
        raise ConfigError(f"{owner} returned {value!r} at step {step}; expected a finite number >= 0")
    return float(value)


def rate_at(owner: str, schedule: Callable[[int], Any], step: int) -> float:
    """``schedule(step)`` checked by :func:`check_rate_value`, ``owner`` naming who asks.

    A :class:`ConfigError` from inside (a :class:`WarmUp` whose wrapped schedule
    returned a bad rate) is raised again with ``owner`` and ``step`` in front.
    """
    label = f"{owner} {schedule!r}"
    try:
        value = schedule(step)
    except ConfigError as exc:
        raise ConfigError(f"{label} failed at step {step}: {exc}") from exc
    return check_rate_value(label, value, step)


def check_step_count(owner: str, value: Any) -> int:
    """A step count (an optimizer's ``iterations``) as a plain int ``>= 0``; ``ConfigError`` if not.

    A negative count would run a schedule backwards (``StepDecay`` at step -1:
    ``initial_lr / gamma``).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{owner} (the step count) must be an integer >= 0, got {value!r}")
    return int(value)


def _check_steps(owner: str, arg: str, value: Any) -> int:
    """``value`` as a plain int (NumPy integers accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{owner}: {arg} must be a positive integer, got {value!r}")
    return int(value)


class Schedule(Configurable):
    """Base class: a learning rate as a function of the optimizer step.

    Subclasses implement ``__call__(step) -> float`` (``step`` counts from 0)
    and ``get_config()``; ``from_config`` calls the constructor with it. The
    built-in ones check ``step`` with :meth:`_step` first: an integer ``>= 0``
    (NumPy's too); anything else (``"a"``, ``None``, ``2.5``, ``-1``) is a
    :class:`ConfigError` naming the schedule, not a rate extrapolated backwards.
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__(step)")

    def _step(self, step: Any) -> int:
        """``step`` as a plain ``int >= 0`` (:func:`check_step_count`), naming this schedule if not;
        a whole float (``3.0``) is taken, as Keras takes it."""
        if isinstance(step, (float, np.floating)) and math.isfinite(step) and float(step).is_integer():
            step = int(step)
        return check_step_count(f"{type(self).__name__}: step", step)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    __hash__ = None  # type: ignore[assignment]


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps (PyTorch's ``StepLR``).

    ``lr(step) = initial_lr * gamma ** floor(step / step_size)``

    Args:
        initial_lr: the rate of steps ``0 .. step_size - 1``.
        step_size: number of steps between decays.
        gamma: the decay factor, default 0.1; above 1 the rate grows, and is
            ``inf`` once past the float range (as torch's ``StepLR``).
    """

    def __init__(self, initial_lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.initial_lr = _check_rate("StepDecay", "initial_lr", initial_lr)
        self.step_size = _check_steps("StepDecay", "step_size", step_size)
        self.gamma = _check_rate("StepDecay", "gamma", gamma)

    def __call__(self, step: int) -> float:
        return self.initial_lr * _power(self.gamma, self._step(step) // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"initial_lr": self.initial_lr, "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """Exponential decay (Keras' ``ExponentialDecay``).

    ``lr(step) = initial_lr * decay_rate ** (step / decay_steps)``, with the
    exponent floored when ``staircase`` is true.

    Args:
        initial_lr: the rate at step 0.
        decay_rate: the factor applied every ``decay_steps`` steps.
        decay_steps: steps per factor of ``decay_rate``, default 1 (PyTorch's
            ``ExponentialLR`` with ``gamma=decay_rate``).
        staircase: decay in discrete jumps instead of continuously, default
            False (a bool: a string such as ``"False"`` is refused).
    """

    def __init__(
        self, initial_lr: float, decay_rate: float, decay_steps: int = 1, staircase: bool = False
    ) -> None:
        self.initial_lr = _check_rate("ExponentialDecay", "initial_lr", initial_lr)
        self.decay_rate = _check_rate("ExponentialDecay", "decay_rate", decay_rate)
        self.decay_steps = _check_steps("ExponentialDecay", "decay_steps", decay_steps)
        self.staircase = _check_flag("ExponentialDecay", "staircase", staircase)

    def __call__(self, step: int) -> float:
        exponent = self._step(step) / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return self.initial_lr * _power(self.decay_rate, exponent)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }


class CosineDecay(Schedule):
    """Cosine annealing from ``initial_lr`` to ``alpha * initial_lr`` (Keras' ``CosineDecay``).

    ``lr(step) = initial_lr * ((1 - alpha) * 0.5 * (1 + cos(pi * t)) + alpha)``
    with ``t = min(step, decay_steps) / decay_steps``; constant after
    ``decay_steps``.

    Args:
        initial_lr: the rate at step 0.
        decay_steps: number of steps to reach the final rate.
        alpha: the final rate as a fraction of ``initial_lr``, in ``[0, 1]``,
            default 0.0.
    """

    def __init__(self, initial_lr: float, decay_steps: int, alpha: float = 0.0) -> None:
        self.initial_lr = _check_rate("CosineDecay", "initial_lr", initial_lr)
        self.decay_steps = _check_steps("CosineDecay", "decay_steps", decay_steps)
        alpha = _check_rate("CosineDecay", "alpha", alpha)
        if alpha > 1:
            raise ConfigError(f"CosineDecay: alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def __call__(self, step: int) -> float:
        t = min(self._step(step), self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.initial_lr * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"initial_lr": self.initial_lr, "decay_steps": self.decay_steps, "alpha": self.alpha}


class WarmUp(Schedule):
    """Linear warm-up for ``warmup_steps`` steps, then the wrapped schedule.

    ``lr(step) = target * (step + 1) / warmup_steps`` for
    ``step < warmup_steps``, where ``target`` is the wrapped rate at its step
    0; afterwards ``lr(step) = schedule(step - warmup_steps)``, so the wrapped
    schedule starts its own count when the warm-up ends. The first step already
    uses a non-zero rate and the ramp reaches ``target`` exactly at the end.

    Args:
        schedule: the schedule to warm up into, or a constant rate (float).
        warmup_steps: length of the ramp in steps.

    Raises:
        ConfigError: when called, if a wrapped callable returns anything but a
            finite number ``>= 0`` (naming it, its step and the value).
    """

    def __init__(self, schedule: Schedule | float | dict[str, Any], warmup_steps: int) -> None:
        schedule = get(schedule)
        if not callable(schedule):
            schedule = _check_rate("WarmUp", "schedule", schedule)
        self.schedule = schedule
        self.warmup_steps = _check_steps("WarmUp", "warmup_steps", warmup_steps)

    def _after(self, step: int) -> float:
        if callable(self.schedule):
            owner = f"WarmUp: the wrapped schedule {self.schedule!r}"
            return check_rate_value(owner, self.schedule(step), step)
        return float(self.schedule)

    def __call__(self, step: int) -> float:
        step = self._step(step)
        if step < self.warmup_steps:
            return self._after(0) * (step + 1) / self.warmup_steps
        return self._after(step - self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        return {"schedule": serialize(self.schedule), "warmup_steps": self.warmup_steps}

    def __repr__(self) -> str:  # the wrapped schedule as itself: a plain function has no config
        return f"WarmUp(schedule={self.schedule!r}, warmup_steps={self.warmup_steps})"


_SCHEDULES: dict[str, type[Schedule]] = {
    cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay, WarmUp)
}


def serialize(schedule: Any) -> Any:
    """A number as a float; a schedule as ``{"class_name": ..., "config": ...}``.

    A schedule class of one's own is saved under its class name; loading it
    takes ``load_model(path, custom_objects={name: cls})``.

    Raises:
        ConfigError: for a callable that has no ``get_config`` (a lambda), or a
            class named like a built-in schedule without being it (it would
            load as the built-in, with another rule).
    """
    if schedule is None:
        return None
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
        return float(schedule)
    if not hasattr(schedule, "get_config"):
        raise ConfigError(
            f"schedule {schedule!r} has no get_config() and cannot be saved; "
            f"use one of framework.base.schedules: {', '.join(_SCHEDULES)}"
        )
    name = type(schedule).__name__
    builtin = _SCHEDULES.get(name)
    if builtin is not None and type(schedule) is not builtin:
        raise ConfigError(
            f"schedule {type(schedule).__module__}.{type(schedule).__qualname__} is named like the "
            f"built-in {name} but is another class: saved as {name!r} it would load as the built-in; "
            "give it a name of its own (and load with custom_objects)"
        )
    return {"class_name": name, "config": schedule.get_config()}


def get(spec: Any) -> Any:
    """Rebuild a schedule from ``{"class_name": ..., "config": ...}``; pass others through.

    A number, ``None`` or an existing callable is returned unchanged. The class
    is looked up among the ``custom_objects`` in scope (``load_model(path,
    custom_objects=...)``, where it must be a :class:`Schedule` subclass), then
    among the classes of this module by exact name; nothing is imported from a
    config.

    Raises:
        ConfigError: for an unknown class name or a malformed dict.

    Example:
        >>> get({"class_name": "StepDecay", "config": {"initial_lr": 0.1, "step_size": 10}})
        StepDecay(initial_lr=0.1, step_size=10, gamma=0.1)
    """
    if not isinstance(spec, dict):
        return spec
    if "class_name" not in spec:
        raise ConfigError(
            f"a schedule config must be a dict with 'class_name' and 'config', got keys {sorted(spec)}"
        )
    name = spec["class_name"]
    if not isinstance(name, str):
        raise ConfigError(f"a learning-rate schedule config's class_name must be a string, got {name!r}")
    custom = namespace.custom_object(name)
    if isinstance(custom, type) and issubclass(custom, Schedule):
        cls: type[Schedule] | None = custom
    else:  # a custom object of that name that is no schedule (a layer's) leaves the built-in
        cls = _SCHEDULES.get(name)
        if cls is None and custom is not None:
            raise ConfigError(
                f"custom_objects[{name!r}] is {custom!r}, not a Schedule subclass: it cannot rebuild "
                "a learning-rate schedule"
            )
    if cls is None:
        raise ConfigError(
            f"unknown learning-rate schedule {name!r}; known schedules: {', '.join(_SCHEDULES)}. "
            f"A schedule class of your own loads with load_model(path, custom_objects={{{name!r}: {name}}})"
        )
    config = spec.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"schedule {name}: config must be a dict, got {config!r}")
    return cls.from_config(dict(config))
