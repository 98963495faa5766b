"""Trainable parameters and non-trainable buffers held by layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.allocation import charge
from framework.errors import ConfigError

__all__ = ["TRAINABLE_VERSION", "Buffer", "Parameter"]

#: Bumped whenever a parameter is frozen or unfrozen: an optimizer bound to a
#: layer compares it with the value it saw to re-collect the trainable set.
TRAINABLE_VERSION = [0]


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
            layers add to it in ``backward`` with :meth:`add_grad` or
            :meth:`add_grad_product`.
    """

    __slots__ = ("_grad", "_grad_zero", "_trainable")

    def __init__(self, data: Any, trainable: bool = True) -> None:
        array = np.asarray(data)
        if not np.issubdtype(array.dtype, np.floating):
            raise ConfigError(f"Parameter: expected a floating-point array, got dtype {array.dtype}")
        charge(array.nbytes, array.shape)
        self.data = np.ascontiguousarray(array)
        # np.zeros maps fresh zero pages lazily; zeros_like would write every byte now.
        self._grad: np.ndarray = np.zeros(self.data.shape, dtype=self.data.dtype)
        self._grad_zero = False
        self.trainable = bool(trainable)

    @property
    def trainable(self) -> bool:
        """Whether optimizers update it; a change takes effect from the next optimizer step."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        value = bool(value)
        if getattr(self, "_trainable", None) is not value:
            self._trainable = value
            TRAINABLE_VERSION[0] += 1

    # ``zero_grad(lazy=True)`` (what ``fit`` uses between steps) only marks the
    # gradient as zero. The first layer to contribute then writes its product
    # straight into the array (``grad_target``) instead of adding it to freshly
    # written zeros, which saves two passes over every weight per step; any
    # other read fills the zeros first.

    @property
    def grad(self) -> np.ndarray:
        if self._grad_zero:
            self._grad.fill(0)
            self._grad_zero = False
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        current = getattr(self, "_grad", None)  # unset while unpickling
        if value is current and value is not None:  # ``p.grad += g`` assigns the same array back
            return
        if value is None:  # as PyTorch's ``p.grad = None``: no gradient yet (zeros when read)
            self._grad = np.zeros(self.data.shape, dtype=self.data.dtype)
            self._grad_zero = True  # and an optimizer skips the parameter if no backward adds one
            return
        self._grad_zero = False
        value = np.asarray(value)
        data = getattr(self, "data", None)
        if data is None:  # unpickling an object saved before ``grad`` was a property
            self._grad = value
            return
        if value.shape != data.shape:
            raise ConfigError(f"Parameter.grad: expected shape {data.shape}, got {value.shape}")
        if value.dtype == self.data.dtype and value.flags.c_contiguous and value.flags.writeable:
            self._grad = value  # kept, not copied: the caller's array is the gradient
        else:
            self._grad = np.array(value, dtype=self.data.dtype, order="C", copy=True)

    def zero_grad(self, lazy: bool = False) -> None:
        """Set the accumulated gradient to zero, in place.

        Args:
            lazy: only mark it as zero; the zeros are written when something
                reads ``grad``, or skipped when a layer overwrites it through
                :meth:`add_grad`. Until then an array obtained from ``grad``
                earlier keeps its old values, so ``fit`` uses this between its
                own steps, where nothing else holds the array.
        """
        if lazy:
            self._grad_zero = True
        else:
            self._grad.fill(0)
            self._grad_zero = False

    def _grad_target(self) -> np.ndarray | None:
        """``grad`` to overwrite if it is lazily zero, else ``None`` (add to ``grad`` then).

        The gradient counts as written from this call on. Internal: layers use
        :meth:`add_grad` and :meth:`add_grad_product`.
        """
        if self._grad_zero:
            self._grad_zero = False
            return self._grad
        return None

    def pending_grad(self) -> np.ndarray | None:
        """The gradient added since the last lazy :meth:`zero_grad`, or ``None`` if nothing was added."""
        return None if self._grad_zero else self._grad

    # Kept for layers written before add_grad_product; same behaviour.
    grad_target = _grad_target

    def add_grad(self, value: np.ndarray) -> None:
        """Add ``value`` (shaped like ``data``) to the gradient.

        Where ``fit`` has the gradient marked as zero, ``value`` is written
        instead of added (the same result, one pass less). A parameter used
        several times (a shared layer, a tied weight) receives the sum.
        """
        target = self._grad_target()
        if target is None:
            self._grad += value
        else:
            np.copyto(target, value, casting="same_kind")

    def add_grad_product(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add the matrix product ``a @ b`` (shaped like ``data``) to the gradient.

        The first contribution of a step is computed straight into the
        gradient array (``np.matmul(a, b, out=grad)``), with no temporary the
        size of the weight; a later one (a second use of a shared weight) adds.
        """
        target = self._grad_target()
        if target is None:
            self._grad += a @ b
        else:
            np.matmul(a, b, out=target)

    def astype(self, dtype: Any) -> None:
        """Convert data and grad to ``dtype`` in place of the old arrays."""
        self.data = self.data.astype(dtype)
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
        array = np.asarray(data)
        charge(array.nbytes, array.shape)
        self.data = np.ascontiguousarray(array)

    def __repr__(self) -> str:
        return f"Buffer(shape={self.shape}, dtype={self.dtype})"
