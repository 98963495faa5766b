"""``Configurable``: the get_config / from_config / repr contract shared by pluggable objects."""

from __future__ import annotations

import inspect
from typing import Any

from framework.errors import ConfigError

__all__ = ["Configurable", "takes_name"]


def takes_name(cls: type, *, unreadable: bool) -> bool:
    """Whether ``cls(name=...)`` is accepted: its constructor has a ``name`` parameter or ``**kwargs``.

    ``unreadable`` is the answer when the signature cannot be read (a builtin, a C extension).
    """
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return unreadable
    return any(p.name == "name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class Configurable:
    """Rebuildable from ``get_config()``: the constructor arguments as JSON data.

    Subclasses return their constructor arguments from ``get_config``;
    ``from_config`` calls the constructor with them, turning a mismatch into a
    :class:`~framework.ConfigError` that names the class and the config.
    """

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this object, as JSON data."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Rebuild an object from :meth:`get_config`'s output."""
        if not isinstance(config, dict):
            raise ConfigError(f"{cls.__name__}.from_config: expected a dict, got {type(config).__name__}")
        try:
            return cls(**config)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}.from_config: cannot rebuild from {config}: {exc}") from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
