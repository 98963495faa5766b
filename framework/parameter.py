"""Trainable parameters and non-trainable buffers held by layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["Buffer", "Parameter"]


class _Held:
    """An array a layer owns: ``data`` plus its shape, dtype, size and ``assign``."""

    __slots__ = ("data",)

    data: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def assign(self, value: Any) -> None:
        """Copy ``value`` into ``data`` in place (the shape must match)."""
        value = np.asarray(value)
        if value.shape != self.data.shape:
            raise ConfigError(
                f"{type(self).__name__}.assign: expected shape {self.data.shape}, got {value.shape}"
            )
        np.copyto(self.data, value, casting="same_kind")


class Parameter(_Held):
    """A learnable array and the gradient accumulated into it.

    A layer that assigns a ``Parameter`` as an attribute owns it: the layer's
    :meth:`~framework.Layer.parameters` finds it, optimizers update ``data`` in
    place from ``grad``, and checkpoints save it under the attribute's name.

    Args:
        data: the initial values; a floating-point array (copied if not
            contiguous).
        trainable: whether optimizers update it. A frozen parameter still
            receives gradients but is counted as non-trainable.

    Attributes:
        data: the values, shape ``shape``.
        grad: the accumulated gradient ``dL/d data``, same shape and dtype;
            layers add to it with ``+=`` in ``backward``.
    """

    __slots__ = ("grad", "trainable")

    def __init__(self, data: Any, trainable: bool = True) -> None:
        array = np.asarray(data)
        if not np.issubdtype(array.dtype, np.floating):
            raise ConfigError(f"Parameter: expected a floating-point array, got dtype {array.dtype}")
        self.data = np.ascontiguousarray(array)
        # np.zeros maps fresh zero pages lazily; zeros_like would write every byte now.
        self.grad: np.ndarray = np.zeros(self.data.shape, dtype=self.data.dtype)
        self.trainable = bool(trainable)

    def zero_grad(self) -> None:
        """Set the accumulated gradient to zero, in place."""
        self.grad.fill(0)

    def astype(self, dtype: Any) -> None:
        """Convert data and grad to ``dtype`` in place of the old arrays."""
        self.data = self.data.astype(dtype)
        self.grad = np.zeros(self.data.shape, dtype=self.data.dtype)

    def __repr__(self) -> str:
        frozen = "" if self.trainable else ", trainable=False"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{frozen})"


class Buffer(_Held):
    """Non-trainable layer state (for example BatchNorm's running statistics).

    Saved in checkpoints and counted as non-trainable in ``summary()``, never
    touched by optimizers.
    """

    __slots__ = ()

    def __init__(self, data: Any) -> None:
        self.data = np.ascontiguousarray(np.asarray(data))

    def __repr__(self) -> str:
        return f"Buffer(shape={self.shape}, dtype={self.dtype})"
