"""Training float16 parameters: float32 master weights and dynamic loss scaling.

An :class:`~framework.base.optimizer.Optimizer` bound to a parameter whose
dtype is narrower than float32 (float16) keeps a float32 *master* copy of it
and runs its update rule, and every slot (moments), in float32 on that copy;
the parameter receives the master rounded back after each step. This module
holds the pieces that path needs: :func:`needs_master`, which decides it per
parameter at bind, and :class:`LossScaler`, the dynamic loss scale the
training step applies to the loss gradient so small float16 gradients do not
flush to zero (the scheme of PyTorch's ``GradScaler`` and Keras's
``LossScaleOptimizer``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from framework.base.parameter import Parameter
from framework.errors import ConfigError

__all__ = ["MASTER_DTYPE", "MAX_SCALE", "LossScaler", "all_finite", "needs_master"]

#: The dtype of master weights and of the slots of a narrow parameter.
MASTER_DTYPE = np.dtype(np.float32)


def needs_master(param: Parameter) -> bool:
    """Whether ``param`` is floating point and narrower than float32 (it is trained on a float32 copy)."""
    dtype = param.dtype
    return bool(np.issubdtype(dtype, np.floating) and dtype.itemsize < MASTER_DTYPE.itemsize)


def all_finite(params: Iterable[Parameter]) -> bool:
    """Whether every gradient of ``params`` is free of NaN and infinities.

    A float16/float32 gradient is summed in float64, which cannot overflow for
    finite entries, and a NaN or an infinity anywhere makes the sum non-finite
    (``+inf`` and ``-inf`` together give NaN, without a warning: an overflow is
    what this check expects to see). A float64 gradient, whose finite entries
    may sum past float64's range, is checked entry by entry.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        for p in params:
            grad = p.grad
            if grad.dtype.itemsize >= 8:
                if not np.isfinite(grad).all():
                    return False
            elif not math.isfinite(float(np.sum(grad, dtype=np.float64))):
                return False
    return True


#: The largest scale: the growth stops below float32's overflow, as GradScaler's does.
MAX_SCALE = float(np.finfo(np.float32).max)


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


class LossScaler:
    """Dynamic loss scale: multiply the loss gradient by ``scale``, adapt it to overflows.

    The training step multiplies the loss gradient by :attr:`scale` before the
    backward pass, then sets :attr:`pending`; the optimizer's next ``step``
    sees it and checks every gradient: a NaN or an infinity means the scaled
    gradients overflowed, so the step is skipped (gradients zeroed, the step
    count not advanced) and the scale halved; otherwise the gradients are
    divided by the scale (in float32 for float16 parameters) and the step
    taken, and after ``growth_interval`` such steps in a row the scale doubles,
    unless that would pass float32's largest value (PyTorch's ``GradScaler``
    keeps its scale finite the same way: a scale of inf would turn zero
    gradients into NaN and skip every later step).

    Args:
        scale: the initial scale, default ``2**15``.
        growth_interval: finite steps in a row before the scale doubles,
            default 2000.

    Attributes:
        scale: the current scale.
        good_steps: finite steps since the last change of the scale.
        skipped: steps skipped for overflow since construction (not saved).
        pending: the gradients of the coming step carry :attr:`scale`.
    """

    def __init__(self, scale: float = 2.0**15, growth_interval: int = 2000) -> None:
        if not (_is_real(scale) and math.isfinite(scale) and 0 < scale <= MAX_SCALE):
            raise ConfigError(
                f"LossScaler: scale must be a finite number > 0 (at most float32's largest), got {scale!r}"
            )
        if not _is_count(growth_interval) or growth_interval < 1:
            raise ConfigError(f"LossScaler: growth_interval must be an integer >= 1, got {growth_interval!r}")
        self.scale = float(scale)
        self.growth_interval = int(growth_interval)
        self.good_steps = 0
        self.skipped = 0
        self.pending = False

    def scale_gradient(self, grad: Any) -> Any:
        """``grad`` (an array or a list of arrays, one per output) times :attr:`scale`, as new arrays.

        An entry overflowing float16 becomes an infinity: the step then skips.
        """
        if isinstance(grad, (list, tuple)):
            return [self.scale_gradient(g) for g in grad]
        grad = np.asarray(grad)
        with np.errstate(over="ignore"):  # in float32 at least: 2**16 itself is beyond float16
            return np.multiply(grad, self.scale, dtype=np.result_type(grad, np.float32)).astype(grad.dtype)

    def overflowed(self) -> None:
        """Record a skipped step: halve the scale, restart the count of finite steps."""
        self.scale /= 2.0
        self.good_steps = 0
        self.skipped += 1

    def stepped(self) -> None:
        """Record a finite step: double the scale after ``growth_interval`` of them in a row."""
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            if self.scale * 2.0 <= MAX_SCALE:
                self.scale *= 2.0
            self.good_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"scale": float, "good_steps": int, "growth_interval": int}``, as GradScaler's state holds."""
        return {"scale": self.scale, "good_steps": self.good_steps, "growth_interval": self.growth_interval}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :attr:`scale`, :attr:`good_steps`, :attr:`growth_interval` from :meth:`state_dict`'s form.

        A key left out (a state saved without ``growth_interval``) keeps the current value.
        """
        scale = state.get("scale", self.scale)
        good = state.get("good_steps", 0)
        interval = state.get("growth_interval", self.growth_interval)
        if not _is_real(scale):
            raise ConfigError(f"LossScaler.load_state_dict: scale must be a number, got {scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"LossScaler.load_state_dict: scale must be finite and > 0, got {scale!r}")
        if not _is_count(good) or good < 0:
            raise ConfigError(f"LossScaler.load_state_dict: good_steps must be an integer >= 0, got {good!r}")
        if not _is_count(interval) or interval < 1:
            raise ConfigError(
                f"LossScaler.load_state_dict: growth_interval must be an integer >= 1, got {interval!r}"
            )
        self.scale = min(float(scale), MAX_SCALE)
        self.good_steps = int(good)
        self.growth_interval = int(interval)
        self.pending = False
