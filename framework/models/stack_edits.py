"""What ``Sequential.add`` / ``pop`` check and update beyond the stack itself.

- :func:`sample_shape`: ``Sequential(input_shape=...)`` validated, a
  :class:`~framework.ConfigError` naming the model for anything but positive sizes;
- :func:`stack_changed`: after a layer is added or popped, every optimizer
  re-collects its model's trainable parameters at its next step (a layer added
  to a compiled model trains, a popped one no longer is stepped; the moments
  of the parameters that stay are kept, as for a ``trainable`` flag changed
  since ``compile``), and a compiled model pairs its new last layer with its
  loss again: the fused softmax/sigmoid gradient that ``compile`` chose for
  the old last layer (see :func:`framework.models.compile.compile_model`)
  must not be applied to another one.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from framework.base.parameter import TRAINABLE_VERSION
from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.base.layer import Layer
    from framework.models.model import Model

__all__ = ["is_size", "sample_shape", "stack_changed"]


def is_size(d: Any) -> bool:
    """Whether ``d`` is an axis size: an int (not a bool) or ``None`` (unknown)."""
    return d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool))


def sample_shape(shape: Any, model: Layer) -> tuple[int | None, ...]:
    """``input_shape=`` (one sample's shape, an int or a tuple) as a tuple of positive sizes or ``None``.

    Raises:
        ConfigError: naming ``model`` and the value, for anything else.
    """
    sizes = (shape,) if isinstance(shape, numbers.Integral) and not isinstance(shape, bool) else shape
    if (
        not isinstance(sizes, (tuple, list))
        or not all(is_size(d) for d in sizes)
        or any(d is not None and d <= 0 for d in sizes)
    ):
        raise ConfigError(
            f"{model.describe()}: input_shape must be one sample's shape, a tuple of positive sizes "
            f"such as (784,) or (3, 32, 32), got {shape!r}"
        )
    return tuple(None if d is None else int(d) for d in sizes)


def stack_changed(model: Model) -> None:
    """A layer was added to or popped from ``model``: refresh what depends on its layers."""
    TRAINABLE_VERSION[0] += 1  # every bound optimizer re-collects its parameters at its next step
    if model.compiled and model._losses:
        from framework.models.compile import _pair_outputs

        model._fused_output = _pair_outputs(model, model._losses, model._metric_slots)
