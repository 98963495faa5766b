"""Base class of losses: ``forward(y_pred, y_true) -> float``, ``backward()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["Loss"]


class Loss:
    """A scalar objective with a hand-derived gradient.

    ``forward`` returns the mean loss over the batch (a Python float) and caches
    what ``backward`` needs; ``backward()`` returns ``dL/d y_pred`` of the same
    shape as ``y_pred``, already divided by the batch size, so layers never
    divide again.
    """

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        return self.forward(y_pred, y_true)

    @property
    def name(self) -> str:
        from framework.registry import REGISTRY

        return REGISTRY.name_of("losses", self) or type(self).__name__

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Loss:
        try:
            return cls(**config)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}.from_config: cannot rebuild from {config}: {exc}") from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
