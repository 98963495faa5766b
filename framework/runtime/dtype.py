"""The default floating-point dtype of new parameters and of model inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["get_default_dtype", "set_default_dtype", "resolve_dtype"]

_ALLOWED = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_default = np.dtype(np.float32)


def resolve_dtype(dtype: Any = None) -> np.dtype:
    """Return ``dtype`` as a NumPy floating dtype, or the default when ``None``.

    Raises:
        ConfigError: if ``dtype`` is not float16, float32 or float64.
    """
    if dtype is None:
        return _default
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
    """The dtype new parameters are created in (float32 unless changed)."""
    return _default


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
