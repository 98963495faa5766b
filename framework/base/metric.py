"""Base class of metrics: a batch value and a running mean over an epoch."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from framework.base.config import Configurable

__all__ = ["Metric"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Metric(Configurable):
    """A quantity reported during training, averaged over the samples seen.

    Subclasses implement ``compute(y_pred, y_true) -> float`` (the batch mean);
    ``update`` accumulates it weighted by batch size, ``result`` returns the
    running mean, ``reset`` starts again. A metric that is not a mean of
    per-sample values overrides ``update`` / ``result`` / ``reset``.

    Args:
        name: the key in ``History.history`` and ``evaluate``'s dict; defaults
            to the registered name (``accuracy``).
    """

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self._total = 0.0
        self._count = 0

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        from framework.registry.manager import REGISTRY

        return REGISTRY.name_of("metrics", self) or _snake(type(self).__name__)

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    def __call__(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        return float(self.compute(y_pred, y_true))

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        n = len(y_pred)
        self._total += float(self.compute(y_pred, y_true)) * n
        self._count += n

    def result(self) -> float:
        return self._total / self._count if self._count else float("nan")

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0

    def get_config(self) -> dict[str, Any]:
        return {"name": self._name} if self._name else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
