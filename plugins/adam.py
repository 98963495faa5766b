"""The Adam and AdamW optimizers (PyTorch's rules and defaults), registered by :mod:`plugins.optimizers`.

See :mod:`plugins.optimizers` for what every built-in optimizer shares: the
base class does ``learning_rate``, ``weight_decay``, clipping, the step count
and ``state_dict``; ``g`` below is the gradient after clipping and weight
decay, ``t`` the 1-based step number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from framework.base.optimizer import Optimizer
from framework.base.parameter import Parameter
from framework.base.validation import bounded_number as _number
from framework.base.validation import check_bool
from framework.errors import ConfigError
from framework.runtime import blas

__all__ = ["Adam", "AdamW"]

LearningRate = float | Callable[[int], float]


class Adam(Optimizer):
    """Adaptive moment estimation with bias correction; PyTorch's rule.

    ``m <- b1 * m + (1 - b1) * g``, ``v <- b2 * v + (1 - b2) * g^2``
    (AMSGrad: ``v_max <- max(v_max, v)`` is used in place of ``v``), then
    ``p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    Args:
        params: parameters or a layer/model to bind now (optional).
        learning_rate: float or schedule, default 1e-3 (alias ``lr``).
        betas: ``(b1, b2)``, each in ``[0, 1)``, default ``(0.9, 0.999)``.
        eps: added to the denominator, ``> 0``, default 1e-8.
        weight_decay: L2 penalty added to the gradient (use :class:`AdamW` for
            decoupled decay), default 0.0.
        amsgrad: use the running maximum of ``v``, default False.
        clipnorm, clipvalue: see the base class.

    Attributes:
        state slots ``exp_avg`` (m), ``exp_avg_sq`` (v) and
        ``max_exp_avg_sq`` (AMSGrad). The step ``t`` is the optimizer's
        ``iterations + 1``, saved in ``state_dict``: one count for every
        parameter, as Keras keeps it. PyTorch counts per parameter, which
        differs for a parameter that joins late (a layer unfrozen after some
        steps: its first bias corrections use the global ``t``) or that gets
        no gradient in some steps.
    """

    def __init__(
        self,
        params: Any = None,
        learning_rate: LearningRate = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        lr: LearningRate | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise ConfigError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            _number(name, "betas[0]", betas[0], low=0.0, high=1.0),
            _number(name, "betas[1]", betas[1], low=0.0, high=1.0),
        )
        self.eps = _number(name, "eps", eps, low=0.0, open_low=True)
        self.amsgrad = check_bool(name, "amsgrad", amsgrad)
        super().__init__(
            params, learning_rate, lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue
        )

    def slot_names(self) -> frozenset[str]:
        return frozenset({"exp_avg", "exp_avg_sq", *({"max_exp_avg_sq"} if self.amsgrad else ())})

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(param.data)
        if not self.decay_in_gradient and self.weight_decay:
            param.data *= 1.0 - lr * self.weight_decay
        beta1, beta2 = self.betas
        t = self.iterations + 1
        work = self.scratch(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        # Seven passes over the parameter's size; the moment updates and the final
        # step are fused BLAS updates (framework.runtime.blas).
        blas.axpby(1.0 - beta1, grad, beta1, exp_avg, work)
        blas.axpby(1.0 - beta2, np.multiply(grad, grad, out=work), beta2, exp_avg_sq)
        second = exp_avg_sq
        if self.amsgrad:
            second = np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        # lr/c1 * m / (sqrt(v)/sqrt(c2) + eps) == (lr sqrt(c2)/c1) * m / (sqrt(v) + eps sqrt(c2)),
        # with the bias corrections c_i = 1 - beta_i^t: one pass fewer.
        root_c2 = math.sqrt(1.0 - beta2**t)
        np.sqrt(second, out=work)
        work += self.eps * root_c2
        np.divide(exp_avg, work, out=work)
        blas.axpy(-lr * root_c2 / (1.0 - beta1**t), work, param.data)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "betas": list(self.betas), "eps": self.eps, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019); PyTorch's rule.

    Before the Adam step, ``p <- p * (1 - lr * weight_decay)``; the decay never
    enters the moments, unlike ``Adam(weight_decay=...)``.

    Args:
        params: parameters or a layer/model to bind now (optional).
        learning_rate: float or schedule, default 1e-3 (alias ``lr``).
        betas, eps, amsgrad, clipnorm, clipvalue: as :class:`Adam`.
        weight_decay: decoupled decay coefficient, default 0.01.
    """

    decay_in_gradient = False

    def __init__(
        self,
        params: Any = None,
        learning_rate: LearningRate = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        lr: LearningRate | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        super().__init__(
            params,
            learning_rate,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            lr=lr,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
        )

    def get_config(self) -> dict[str, Any]:
        # the base omits a zero weight_decay, which would rebuild AdamW with its 0.01 default
        return {**super().get_config(), "weight_decay": self.weight_decay}
