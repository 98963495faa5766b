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
            layers add to it with ``+=`` in ``backward`` (or through
            :meth:`grad_target`, which skips the addition while it is zero).
    """

    __slots__ = ("_grad", "_grad_zero", "trainable")

    #: How many times any parameter changed dtype (``astype``); caches of a dtype check it.
    conversions = 0

    def __init__(self, data: Any, trainable: bool = True) -> None:
        array = np.asarray(data)
        if not np.issubdtype(array.dtype, np.floating):
            raise ConfigError(f"Parameter: expected a floating-point array, got dtype {array.dtype}")
        self.data = np.ascontiguousarray(array)
        # np.zeros maps fresh zero pages lazily; zeros_like would write every byte now.
        self._grad: np.ndarray = np.zeros(self.data.shape, dtype=self.data.dtype)
        self._grad_zero = False
        self.trainable = bool(trainable)

    # ``zero_grad`` only marks the gradient as zero. The first layer to
    # contribute then writes its product straight into the array
    # (``grad_target``) instead of adding it to freshly written zeros, which
    # saves two passes over every weight per step; any other read fills the
    # zeros first, so the lazy state is never visible.

    @property
    def grad(self) -> np.ndarray:
        if self._grad_zero:
            self._grad.fill(0)
            self._grad_zero = False
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is self._grad:  # ``p.grad += g`` assigns the same array back
            return
        value = np.asarray(value)
        if value.shape != self.data.shape:
            raise ConfigError(f"Parameter.grad: expected shape {self.data.shape}, got {value.shape}")
        self._grad = np.array(value, dtype=self.data.dtype, order="C", copy=True)
        self._grad_zero = False

    def zero_grad(self) -> None:
        """Set the accumulated gradient to zero (lazily: no array is written now)."""
        self._grad_zero = True

    def grad_target(self) -> np.ndarray | None:
        """``grad`` to overwrite if it is zero, else ``None`` (add to ``grad`` then).

        For a layer's backward: ``out = p.grad_target()``; if ``out`` is an
        array, write the gradient into it (``np.matmul(a, b, out=out)``), which
        equals adding it to zeros; if ``None``, another contribution is already
        there and the layer adds its own with ``p.grad += ...``. The gradient
        counts as written from this call on.
        """
        if self._grad_zero:
            self._grad_zero = False
            return self._grad
        return None

    def add_grad(self, value: np.ndarray) -> None:
        """Add ``value`` (shaped like ``data``) to the gradient."""
        target = self.grad_target()
        if target is None:
            self._grad += value
        else:
            np.copyto(target, value, casting="same_kind")

    def astype(self, dtype: Any) -> None:
        """Convert data and grad to ``dtype`` in place of the old arrays."""
        self.data = self.data.astype(dtype)
        Parameter.conversions += 1
        self._grad = np.zeros(self.data.shape, dtype=self.data.dtype)
        self._grad_zero = False

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
