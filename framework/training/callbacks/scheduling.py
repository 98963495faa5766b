"""Callbacks that set the learning rate each epoch: :class:`LearningRateScheduler`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.arguments import check_verbose
from framework.training.callbacks.base import Callback, Logs

__all__ = ["LearningRateScheduler", "set_lr"]


def set_lr(optimizer: Any, value: float, owner: str) -> None:
    """Set ``optimizer``'s learning rate for a callback ``owner``; refused when it is a schedule."""
    if callable(optimizer.learning_rate):
        raise ConfigError(
            f"{owner}: the optimizer's learning rate is a schedule ({optimizer.learning_rate!r}); "
            "a callback cannot also change it"
        )
    optimizer.learning_rate = float(value)


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch's start to ``schedule(epoch, lr)``.

    Args:
        schedule: a function ``(epoch, current_lr) -> new_lr`` (epoch 0-based),
            or ``(epoch) -> new_lr`` (Keras's older form), such as a schedule
            of :mod:`framework.base.schedules` (``StepDecay(0.1, step_size=2)``
            then steps per epoch, as a PyTorch scheduler stepped each epoch).
        verbose: ``0`` (silent), ``1`` or ``2``: print the new rate each epoch.

    The rate of each epoch is logged (and kept in ``History``) as
    ``learning_rate``, Keras 3's key, and as ``lr``.

    Raises:
        ConfigError: ``schedule`` is not callable or takes neither form, or a
            ``verbose`` other than 0, 1 or 2.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise ConfigError(f"LearningRateScheduler: schedule must be callable, got {schedule!r}")
        self.schedule = schedule
        self.verbose = check_verbose("LearningRateScheduler", verbose)
        self._takes_lr = _arity(schedule) == 2

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        optimizer = self.model.optimizer
        new = self.schedule(epoch, optimizer.lr) if self._takes_lr else self.schedule(epoch)
        if (
            isinstance(new, bool)
            or not isinstance(new, (int, float, np.floating))
            or not math.isfinite(new)
            or new < 0
        ):
            raise ConfigError(
                f"LearningRateScheduler: schedule returned {new!r}; expected a finite float >= 0"
            )
        set_lr(optimizer, float(new), "LearningRateScheduler")
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {float(new):.3g}")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if logs is not None:  # Keras 3's key, and Keras 2's "lr" that earlier versions logged
            logs["learning_rate"] = logs["lr"] = self.model.optimizer.lr


def _arity(schedule: Callable[..., float]) -> int:
    """2 for a ``schedule(epoch, lr)``, 1 for a ``schedule(epoch)``.

    Raises:
        ConfigError: a callable that can be called with neither.
    """
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # no signature to read (a builtin): Keras's (epoch, lr)
        return 2
    for arity in (2, 1):
        try:
            signature.bind(*range(arity))
        except TypeError:
            continue
        return arity
    raise ConfigError(
        f"LearningRateScheduler: schedule must take (epoch, lr) or (epoch), got {schedule!r} "
        f"with signature {signature}"
    )
