"""The default floating-point dtype of new parameters and of model inputs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["default_dtype", "get_default_dtype", "set_default_dtype", "resolve_dtype"]

_ALLOWED = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
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
