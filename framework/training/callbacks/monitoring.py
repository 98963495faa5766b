"""The shared logic of the callbacks that watch one logged quantity (:class:`_Monitor`): the
``monitor`` key and ``mode``, "improved by more than ``min_delta``", and the resumable state.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from framework.errors import CheckpointError, ConfigError
from framework.training.callbacks.arguments import check_number
from framework.training.callbacks.base import Callback, Logs, is_scalar

__all__ = ["_Monitor", "_resolve_mode"]


def _resolve_mode(monitor: str, mode: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    if name.endswith("loss"):  # a loss, even of an output named after a metric ("precision_loss")
        return "min"
    return "max" if any(k in name for k in ("acc", "auc", "precision", "recall", "f1")) else "min"


class _Monitor(Callback):
    """Shared logic of callbacks that watch one logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"{type(self).__name__}: monitor must be a log key such as 'val_loss', got {monitor!r}"
            )
        self.monitor = monitor
        self.mode = _resolve_mode(monitor, mode, type(self).__name__)
        self.min_delta = check_number(type(self).__name__, "min_delta", min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    #: the attributes a checkpoint keeps (besides ``monitor`` and ``mode``, which must match)
    resumable: tuple[str, ...] = ("best",)

    def state_dict(self) -> dict[str, Any]:
        """``monitor``, ``mode`` and the :attr:`resumable` counters, for a checkpoint."""
        return {"monitor": self.monitor, "mode": self.mode} | {k: getattr(self, k) for k in self.resumable}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._take_state(state)

    def _take_state(self, state: dict[str, Any]) -> bool:
        """Take back :meth:`state_dict`'s counters; a state for another quantity is left out, with a warning.

        Returns:
            whether the state was taken.

        Raises:
            CheckpointError: a counter missing or of the wrong kind.
        """
        owner = type(self).__name__
        if (state.get("monitor"), state.get("mode")) != (self.monitor, self.mode):
            warnings.warn(
                f"{owner}: the checkpoint's state watched {state.get('monitor')!r} ({state.get('mode')}), "
                f"this callback {self.monitor!r} ({self.mode}); starting it afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        values = {}
        for key in self.resumable:
            value, kind = state.get(key), type(getattr(self, key))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind or (isinstance(value, int) and value < 0):
                raise CheckpointError(
                    f"{owner}: saved state {key!r} should be a {kind.__name__}, got {value!r}"
                )
            values[key] = value
        for key, value in values.items():
            setattr(self, key, value)
        return True

    def _current(self, logs: Logs | None) -> float | None:
        """The monitored value as a float; ``None`` (with a warning) when it is not logged.

        Raises:
            ConfigError: the monitored key holds an array (``confusion_matrix``).
        """
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{type(self).__name__}: the monitored quantity {self.monitor!r} is not in the logs; "
                f"available: {sorted(logs or {})}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        if not is_scalar(value):
            scalars = sorted(key for key, v in (logs or {}).items() if is_scalar(v))
            raise ConfigError(
                f"{type(self).__name__}: monitor={self.monitor!r} is a non-scalar metric (an array of shape "
                f"{np.shape(value)}), which has no order to improve in; monitor a key holding one number: "
                f"one of {scalars}"
            )
        return float(value)

    def _improved(self, value: float, reference: float | None = None) -> bool:
        """Whether ``value`` beats ``reference`` (default: the best so far) by more than ``min_delta``."""
        reference = self.best if reference is None else reference
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta
