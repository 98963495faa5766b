"""The default floating-point dtype of new parameters and of model inputs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = [
    "HALF",
    "accumulation_dtype",
    "compute_dtype",
    "default_dtype",
    "get_default_dtype",
    "resolve_dtype",
    "set_default_dtype",
]

#: float16: layers take its sums, statistics and exponentials in float32 (PyTorch's ``acc_type``).
HALF = np.dtype(np.float16)
_SINGLE = np.dtype(np.float32)
_ALLOWED = (HALF, _SINGLE, np.dtype(np.float64))
_default = np.dtype(np.float32)
_scoped = threading.local()  # a default_dtype block's dtype, in its own thread only


def resolve_dtype(dtype: Any = None) -> np.dtype:
    """Return ``dtype`` as a NumPy floating dtype, or the default when ``None``.

    Raises:
        ConfigError: if ``dtype`` is not float16, float32 or float64.
    """
    if dtype is None:
        return get_default_dtype()
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"dtype: expected float16, float32 or float64, got {dtype!r}") from exc
    if resolved not in _ALLOWED:
        raise ConfigError(
            f"dtype: expected float16, float32 or float64, got {resolved.name}; "
            "integer and complex parameters are not supported"
        )
    return resolved


def accumulation_dtype(dtype: np.dtype) -> np.dtype | None:
    """The ``dtype=`` of a sum of ``dtype`` values: float32 for float16, else ``None`` (the values' own).

    A float16 sum along a strided axis runs in float16: 4096 ones sum to 2048
    (each ``+1`` past 2048 rounds away) and partial sums past 65504 are inf.
    ``a.sum(axis, dtype=accumulation_dtype(a.dtype))`` accumulates half
    precision in float32, as PyTorch does, and leaves other dtypes unchanged.
    One dtype comparison: free on the float32 path.

    Example:
        >>> import numpy as np
        >>> ones = np.ones((4096, 3), dtype=np.float16)
        >>> float(ones.sum(axis=0)[0]), float(ones.sum(axis=0, dtype=accumulation_dtype(ones.dtype))[0])
        (2048.0, 4096.0)
    """
    return _SINGLE if dtype == HALF else None


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a layer computes in for inputs of ``dtype``: float32 for float16, else ``dtype`` itself.

    Half-precision layers whose statistics, sums or softmax overflow or stall
    in float16 (normalisations, average pools, attention) run in float32 and
    round their outputs and gradients back to float16.
    """
    return _SINGLE if dtype == HALF else dtype


def get_default_dtype() -> np.dtype:
    """The dtype new parameters are created in (float32 unless changed; a ``default_dtype`` block's)."""
    return getattr(_scoped, "dtype", None) or _default


def set_default_dtype(dtype: Any) -> None:
    """Set the dtype of parameters created from now on (float64 for gradient checks).

    Example:
        >>> import framework
        >>> framework.set_default_dtype("float64")
        >>> framework.get_default_dtype()
        dtype('float64')
        >>> framework.set_default_dtype("float32")
    """
    global _default
    _default = resolve_dtype(dtype)


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Create parameters in ``dtype`` inside the block, in this thread only; the default after is unchanged.

    Example:
        >>> import framework
        >>> from framework.runtime.dtype import default_dtype
        >>> with default_dtype("float64"):
        ...     framework.get_default_dtype()
        dtype('float64')
        >>> framework.get_default_dtype()
        dtype('float32')
    """
    previous = getattr(_scoped, "dtype", None)
    _scoped.dtype = resolve_dtype(dtype)
    try:
        yield
    finally:
        _scoped.dtype = previous
