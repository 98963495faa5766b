"""Base class of optimizers: in-place updates, clipping, schedules, state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.parameter import Parameter

__all__ = ["Optimizer"]


class Optimizer:
    """Updates parameters in place from their accumulated gradients.

    Subclasses implement ``update(param, grad, state, lr)``, where ``state`` is
    a dict of this parameter's slot arrays (momentum, moments...) that the
    subclass creates on first use and updates in place. The base class handles
    binding to parameters, weight decay (added to the gradient, as PyTorch's
    ``weight_decay`` does; AdamW overrides it), clipping, learning-rate
    schedules, the step count and ``state_dict``.

    Args:
        params: a layer / model or an iterable of ``Parameter``; may be bound
            later with :meth:`bind` (``compile`` does).
        learning_rate: a float or a schedule, a callable ``step -> lr``
            (alias ``lr``).
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
        if lr is not None:
            learning_rate = lr
        if not callable(learning_rate):
            if not isinstance(learning_rate, (int, float)) or not math.isfinite(learning_rate) or learning_rate < 0:
                raise ConfigError(
                    f"{type(self).__name__}: learning_rate must be a finite number >= 0 "
                    f"or a schedule, got {learning_rate!r}"
                )
        if weight_decay < 0:
            raise ConfigError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}")
        for label, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
            if value is not None and not value > 0:
                raise ConfigError(f"{type(self).__name__}: {label} must be > 0 or None, got {value}")
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.iterations = 0
        self.params: list[Parameter] = []
        self.state: list[dict[str, np.ndarray]] = []
        if params is not None:
            self.bind(params)

    def bind(self, params: Any) -> Optimizer:
        """Attach to the trainable parameters of a layer or an iterable of ``Parameter``."""
        if hasattr(params, "trainable_parameters"):
            found = params.trainable_parameters()
        elif isinstance(params, Iterable):
            found = [p for p in params if isinstance(p, Parameter) and p.trainable]
        else:
            raise ConfigError(
                f"{type(self).__name__}.bind: expected a Layer or Parameters, got {type(params).__name__}"
            )
        self.params = found
        self.state = [{} for _ in found]
        return self

    @property
    def lr(self) -> float:
        """The learning rate of the coming step (the schedule evaluated)."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations))
        return float(self.learning_rate)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Apply one update to every bound parameter, in place."""
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
                grad = grad + self.weight_decay * p.data
            self.update(p, grad, state, lr)
        self.iterations += 1

    #: ``True``: weight decay is added to the gradient (L2); AdamW sets ``False``.
    decay_in_gradient = True

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def get_config(self) -> dict[str, Any]:
        lr = self.learning_rate
        if callable(lr):
            if not hasattr(lr, "get_config"):
                raise ConfigError(
                    f"{type(self).__name__}: a learning-rate schedule must have get_config() "
                    "to be saved; use one from framework.schedules"
                )
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        config: dict[str, Any] = {"learning_rate": lr}
        if self.weight_decay:
            config["weight_decay"] = self.weight_decay
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        try:
            return cls(**config)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}.from_config: cannot rebuild from {config}: {exc}") from exc

    def state_dict(self) -> dict[str, Any]:
        """``{"iterations": n, "slots": [{slot name: array} per bound parameter]}``."""
        return {"iterations": self.iterations, "slots": [dict(s) for s in self.state]}

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
        self.state = [{k: np.array(v, dtype=p.dtype) for k, v in s.items()} for p, s in zip(self.params, slots)]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
