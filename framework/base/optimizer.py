"""Base class of optimizers: in-place updates, clipping, schedules, state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from framework.base import schedules
from framework.base.config import Configurable
from framework.base.parameter import TRAINABLE_VERSION, Parameter
from framework.errors import ConfigError

__all__ = ["Optimizer"]


class Optimizer(Configurable):
    """Updates parameters in place from their accumulated gradients.

    Subclasses implement ``update(param, grad, state, lr)``, where ``state`` is
    a dict of this parameter's slot arrays (momentum, moments...) that the
    subclass creates on first use and updates in place. The base class handles
    binding to parameters, weight decay (added to the gradient, as PyTorch's
    ``weight_decay`` does; AdamW overrides it), clipping, learning-rate
    schedules, the step count and ``state_dict``.

    Args:
        params: a layer / model or an iterable of ``Parameter``; may be bound
            later with :meth:`bind` (``compile`` does). A number or a schedule
            here is taken as the learning rate, so the Keras spelling
            ``SGD(0.1)`` works too.
        learning_rate: a float or a schedule, a callable ``step -> lr`` such
            as :mod:`framework.base.schedules` provides, or its saved
            ``{"class_name": ..., "config": ...}`` form (alias ``lr``).
        weight_decay: L2 penalty coefficient added to each gradient.
        clipnorm: if set, gradients are rescaled so their global L2 norm is at
            most this value.
        clipvalue: if set, each gradient entry is clipped to
            ``[-clipvalue, clipvalue]``.
    """

    def __init__(
        self,
        params: Any = None,
        learning_rate: float | Callable[[int], float] = 0.01,
        *,
        lr: float | Callable[[int], float] | None = None,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        if _is_learning_rate(params):
            learning_rate, params = params, None
        if lr is not None:
            learning_rate = lr
        if weight_decay is None or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
            raise ConfigError(
                f"{type(self).__name__}: weight_decay must be a number >= 0, got {weight_decay!r}"
            )
        for label, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"{type(self).__name__}: {label} must be > 0 or None, got {value!r}")
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.iterations = 0
        self.params: list[Parameter] = []
        self.state: list[dict[str, np.ndarray]] = []
        self._scratch: dict[tuple[int, str], np.ndarray] = {}
        self._source: Any = None
        self._trainable_version = TRAINABLE_VERSION[0]
        if params is not None:
            self.bind(params)

    @property
    def learning_rate(self) -> float | Callable[[int], float]:
        """The constant rate or the schedule (a callable ``step -> lr``)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        value = schedules.get(value)
        if not callable(value):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.floating))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(
                    f"{type(self).__name__}: learning_rate must be a finite number >= 0 "
                    f"or a schedule, got {value!r}"
                )
            value = float(value)
        self._learning_rate = value

    def bind(self, params: Any) -> Optimizer:
        """Attach to the trainable parameters of a layer or an iterable of ``Parameter``."""
        if hasattr(params, "trainable_parameters"):
            found = params.trainable_parameters()
        elif isinstance(params, Iterable) and not isinstance(params, (str, bytes, dict)):
            params = list(params)
            wrong = [p for p in params if not isinstance(p, Parameter)]
            if wrong:
                raise ConfigError(
                    f"{type(self).__name__}.bind: expected a Layer or Parameters, got an iterable "
                    f"holding {type(wrong[0]).__name__} {wrong[0]!r}"
                )
            found = [p for p in params if p.trainable]
        else:
            raise ConfigError(
                f"{type(self).__name__}.bind: expected a Layer or Parameters, got {type(params).__name__}"
            )
        self._source = params if hasattr(params, "trainable_parameters") else None
        self._trainable_version = TRAINABLE_VERSION[0]
        unique: dict[int, Parameter] = {}
        for p in found:
            unique.setdefault(id(p), p)  # a tied weight is updated once per step
        self.params = list(unique.values())
        self.state = [{} for _ in self.params]
        self._scratch = {}
        return self

    def refresh(self) -> None:
        """Re-collect the trainable parameters of the bound layer if any was frozen or unfrozen since.

        Keras's rule: ``layer.trainable = False`` takes effect from the next
        step, compiled again or not. A parameter that stays keeps its slots
        (moments); a newly unfrozen one starts with empty slots.
        """
        source = getattr(self, "_source", None)
        if source is None or getattr(self, "_trainable_version", None) == TRAINABLE_VERSION[0]:
            self._trainable_version = TRAINABLE_VERSION[0]
            return
        self._trainable_version = TRAINABLE_VERSION[0]
        kept = {id(p): s for p, s in zip(self.params, self.state)}
        unique: dict[int, Parameter] = {}
        for p in source.trainable_parameters():
            unique.setdefault(id(p), p)
        self.params = list(unique.values())
        self.state = [kept.get(id(p), {}) for p in self.params]

    @property
    def lr(self) -> float:
        """The learning rate of the coming step (the schedule evaluated)."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations))
        return float(self.learning_rate)

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        self.learning_rate = value

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Apply one update to every bound parameter, in place."""
        if getattr(self, "_trainable_version", None) != TRAINABLE_VERSION[0]:
            self.refresh()
        if self.clipvalue is not None:
            for p in self.params:
                np.clip(p.grad, -self.clipvalue, self.clipvalue, out=p.grad)
        if self.clipnorm is not None:
            total = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in self.params))
            if total > self.clipnorm:
                scale = self.clipnorm / (total + 1e-12)
                for p in self.params:
                    p.grad *= scale
        lr = self.lr
        for p, state in zip(self.params, self.state):
            grad = p.grad
            if self.weight_decay and self.decay_in_gradient:
                grad = np.multiply(p.data, self.weight_decay, out=self.scratch(p, "decayed_grad"))
                grad += p.grad
            self.update(p, grad, state, lr)
        self.iterations += 1

    def scratch(self, param: Parameter, name: str = "work") -> np.ndarray:
        """A reusable uninitialised array shaped like ``param`` (not part of the state).

        ``update`` writes temporaries into it with ``out=`` so a step allocates
        no arrays of the parameter's size.
        """
        key = (id(param), name)
        buf = self._scratch.get(key)
        if buf is None or buf.shape != param.shape or buf.dtype != param.dtype:
            buf = np.empty_like(param.data)
            self._scratch[key] = buf
        return buf

    #: ``True``: weight decay is added to the gradient (L2); AdamW sets ``False``.
    decay_in_gradient = True

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"learning_rate": schedules.serialize(self.learning_rate)}
        if self.weight_decay:
            config["weight_decay"] = self.weight_decay
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def state_dict(self) -> dict[str, Any]:
        """``{"iterations": n, "slots": [{slot name: array} per bound parameter]}``.

        The arrays are copies, so later steps do not change a saved state.
        """
        return {
            "iterations": self.iterations,
            "slots": [{k: np.array(v, copy=True) for k, v in s.items()} for s in self.state],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and slot arrays (copied) for the bound parameters."""
        slots = state.get("slots", [])
        if len(slots) != len(self.params):
            raise ConfigError(
                f"{type(self).__name__}.load_state_dict: state has {len(slots)} parameter slots, "
                f"the optimizer is bound to {len(self.params)} parameters"
            )
        for i, (p, saved) in enumerate(zip(self.params, slots)):
            for key, value in saved.items():
                value = np.asarray(value)
                if value.shape != p.shape and value.ndim != 0:
                    raise ConfigError(
                        f"{type(self).__name__}.load_state_dict: slot {key!r} of parameter {i} "
                        f"has shape {value.shape}, the parameter {p.shape}"
                    )
        self.iterations = int(state.get("iterations", 0))
        self.state = [
            {k: np.array(v, dtype=p.dtype) for k, v in s.items()} for p, s in zip(self.params, slots)
        ]


def _is_learning_rate(value: Any) -> bool:
    """Whether a positional ``params`` argument is really a learning rate."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.floating, schedules.Schedule)):
        return True
    return isinstance(value, dict) and "class_name" in value
