"""Built-in plugin: the SGD, AdaGrad, RMSProp, Adam and AdamW optimizers.

Each follows PyTorch's update rule and defaults exactly (so a model trained
here and in PyTorch from the same weights and gradients takes the same
steps). The :class:`~framework.base.optimizer.Optimizer` base does the rest:
``learning_rate`` (alias ``lr``, a float or a schedule), ``weight_decay``
(added to the gradient, ``g <- g + wd * p``, except in AdamW), ``clipnorm``,
``clipvalue``, the step count and ``state_dict``. Below, ``g`` is the
gradient after clipping and weight decay, ``t`` the 1-based step number and
every slot array has the parameter's shape and dtype. Updates are in place:
``param.data`` stays the same array, and temporaries go to reusable scratch
arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.optimizer import Optimizer
from framework.base.parameter import Parameter
from framework.base.validation import bounded_number as _number
from framework.base.validation import check_bool
from framework.errors import ConfigError
from framework.registry.hookspecs import hookimpl
from framework.runtime import blas
from plugins.adam import Adam, AdamW

__all__ = ["SGD", "AdaGrad", "RMSProp", "Adam", "AdamW"]

LearningRate = float | Callable[[int], float]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum; PyTorch's rule.

    ``b <- momentum * b + (1 - dampening) * g`` (``b = g`` on the first step),
    then ``p <- p - lr * d`` with ``d = g + momentum * b`` (Nesterov) or
    ``d = b``; without momentum ``p <- p - lr * g``.

    Args:
        params: parameters or a layer/model to bind now (optional).
        learning_rate: float or schedule, default 0.01 (alias ``lr``).
        momentum: momentum factor ``>= 0``, default 0.0.
        dampening: dampening of the momentum, in ``[0, 1]``, default 0.0.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and
            ``dampening == 0``), default False.
        weight_decay: L2 penalty added to the gradient, default 0.0.
        clipnorm, clipvalue: gradient clipping (see the base class).

    Attributes:
        state slot ``momentum_buffer`` (when ``momentum > 0``).
    """

    def __init__(
        self,
        params: Any = None,
        learning_rate: LearningRate = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        lr: LearningRate | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        self.momentum = _number("SGD", "momentum", momentum, low=0.0)
        self.dampening = _number("SGD", "dampening", dampening, low=0.0, high=1.0, open_high=False)
        self.nesterov = check_bool("SGD", "nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError(
                f"SGD: nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening}"
            )
        super().__init__(
            params, learning_rate, lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue
        )

    def slot_names(self) -> frozenset[str]:
        return frozenset({"momentum_buffer"} if self.momentum else ())

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        # Each line is one fused pass (framework.runtime.blas): b <- m b + (1 - d) g, p <- p - lr b.
        work = self.scratch(param)
        if self.momentum == 0:
            blas.axpy(-lr, grad, param.data, work)
            return
        buf = state.get("momentum_buffer")
        if buf is None:
            state["momentum_buffer"] = buf = np.array(grad, dtype=param.dtype, copy=True)
        else:
            blas.axpby(1.0 - self.dampening, grad, self.momentum, buf, work)
        if self.nesterov:  # p <- p - lr (g + m b), as two fused passes
            blas.axpy(-lr, grad, param.data, work)
            blas.axpy(-lr * self.momentum, buf, param.data, work)
        else:
            blas.axpy(-lr, buf, param.data, work)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
        }


class AdaGrad(Optimizer):
    """Adaptive per-entry rates from the sum of squared gradients; PyTorch's rule.

    ``s <- s + g^2``, ``p <- p - clr * g / (sqrt(s) + eps)`` with
    ``clr = lr / (1 + (t - 1) * lr_decay)``.

    Args:
        params: parameters or a layer/model to bind now (optional).
        learning_rate: float or schedule, default 0.01 (alias ``lr``).
        lr_decay: per-step decay of the rate, default 0.0; the step is the
            optimizer's ``iterations``, one count for every parameter (see
            :class:`Adam` on how PyTorch's per-parameter count differs).
        eps: added to the denominator, ``> 0``, default 1e-10.
        initial_accumulator_value: starting value of ``s``, ``>= 0``, default 0.
        weight_decay, clipnorm, clipvalue: see the base class.

    Attributes:
        state slot ``sum`` (the accumulator ``s``).
    """

    def __init__(
        self,
        params: Any = None,
        learning_rate: LearningRate = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        lr: LearningRate | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        self.lr_decay = _number("AdaGrad", "lr_decay", lr_decay, low=0.0)
        self.initial_accumulator_value = _number(
            "AdaGrad", "initial_accumulator_value", initial_accumulator_value, low=0.0
        )
        self.eps = _number("AdaGrad", "eps", eps, low=0.0, open_low=True)
        super().__init__(
            params, learning_rate, lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue
        )

    def slot_names(self) -> frozenset[str]:
        return frozenset({"sum"})

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        acc = state.get("sum")
        if acc is None:
            state["sum"] = acc = np.full_like(param.data, self.initial_accumulator_value)
        work = self.scratch(param)
        acc += np.multiply(grad, grad, out=work)
        clr = lr / (1.0 + self.iterations * self.lr_decay)
        np.sqrt(acc, out=work)
        work += self.eps
        np.divide(grad, work, out=work)
        work *= clr
        param.data -= work

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "lr_decay": self.lr_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }


class RMSProp(Optimizer):
    """Divide by a running RMS of the gradients; PyTorch's rule.

    ``v <- alpha * v + (1 - alpha) * g^2``; centred: ``m <- alpha * m +
    (1 - alpha) * g`` and ``d = sqrt(v - m^2) + eps``, else
    ``d = sqrt(v) + eps``. With momentum ``b <- momentum * b + g / d`` (``b``
    starts at zero) and ``p <- p - lr * b``; without, ``p <- p - lr * g / d``.

    Args:
        params: parameters or a layer/model to bind now (optional).
        learning_rate: float or schedule, default 0.01 (alias ``lr``).
        alpha: smoothing constant in ``[0, 1)``, default 0.99 (Keras' ``rho``).
        eps: added to the denominator, ``> 0``, default 1e-8.
        momentum: momentum factor ``>= 0``, default 0.0.
        centered: normalise by the estimated variance instead of the second
            moment, default False.
        weight_decay, clipnorm, clipvalue: see the base class.

    Attributes:
        state slots ``square_avg``, ``grad_avg`` (centred),
        ``momentum_buffer`` (momentum > 0).
    """

    def __init__(
        self,
        params: Any = None,
        learning_rate: LearningRate = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        lr: LearningRate | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        self.alpha = _number("RMSProp", "alpha", alpha, low=0.0, high=1.0)
        self.eps = _number("RMSProp", "eps", eps, low=0.0, open_low=True)
        self.momentum = _number("RMSProp", "momentum", momentum, low=0.0)
        self.centered = check_bool("RMSProp", "centered", centered)
        super().__init__(
            params, learning_rate, lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue
        )

    def slot_names(self) -> frozenset[str]:
        extra = {"grad_avg"} if self.centered else set()
        return frozenset({"square_avg", *extra, *({"momentum_buffer"} if self.momentum else ())})

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(param.data)
            if self.centered:
                state["grad_avg"] = np.zeros_like(param.data)
            if self.momentum > 0:
                state["momentum_buffer"] = np.zeros_like(param.data)
        work = self.scratch(param)
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += np.multiply(np.multiply(grad, grad, out=work), 1.0 - self.alpha, out=work)
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg *= self.alpha
            grad_avg += np.multiply(grad, 1.0 - self.alpha, out=work)
            np.multiply(grad_avg, grad_avg, out=work)
            np.subtract(square_avg, work, out=work)
            np.sqrt(work, out=work)
        else:
            np.sqrt(square_avg, out=work)
        work += self.eps
        np.divide(grad, work, out=work)
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += work
            np.multiply(buf, lr, out=work)
        else:
            work *= lr
        param.data -= work

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }


@hookimpl
def register_optimizers(register: Any) -> None:
    register(SGD, name="sgd", aliases=("SGD",))
    register(AdaGrad, name="adagrad", aliases=("AdaGrad",))
    register(RMSProp, name="rmsprop", aliases=("RMSProp",))
    register(Adam, name="adam", aliases=("Adam",))
    register(AdamW, name="adamw", aliases=("AdamW",))
