"""Lion: sign-of-momentum updates (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")."""

from __future__ import annotations

from typing import Any

import numpy as np
from framework.optimizer import Optimizer

from framework import ConfigError, Parameter

__all__ = ["Lion"]


class Lion(Optimizer):
    """EvoLved Sign Momentum: every entry moves by exactly ``lr`` per step.

    For each parameter ``p`` with gradient ``g`` and momentum ``m`` (zeros at
    first)::

        c = beta1 * m + (1 - beta1) * g
        p <- p - lr * (sign(c) + weight_decay * p)
        m <- beta2 * m + (1 - beta2) * g

    The weight decay is decoupled (as AdamW), not added to the gradient. Use a
    learning rate 3-10x smaller than Adam's and a weight decay 3-10x larger.

    Args:
        params: a layer / model or Parameters (or bind later; ``compile`` does).
        learning_rate: step size (alias ``lr``, default ``1e-4``).
        betas: ``(beta1, beta2)`` (default ``(0.9, 0.99)``).
        weight_decay: decoupled decay coefficient (default ``0``).

    State:
        ``exp_avg``: the momentum ``m``, one per parameter.
    """

    decay_in_gradient = False

    def __init__(
        self,
        params: Any = None,
        learning_rate: Any = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        *,
        lr: Any = None,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"Lion: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        super().__init__(params, learning_rate, lr=lr, weight_decay=weight_decay, **kwargs)

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        beta1, beta2 = self.betas
        m = state.get("exp_avg")
        if m is None:
            m = state["exp_avg"] = np.zeros_like(param.data)
        c = self.scratch(param, "direction")
        np.multiply(m, beta1, out=c)
        c += (1.0 - beta1) * grad
        np.sign(c, out=c)
        if self.weight_decay:
            c += self.weight_decay * param.data
        param.data -= lr * c
        m *= beta2
        m += (1.0 - beta2) * grad

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "betas": list(self.betas)}
