"""Registry-backed namespace of activations: ``from framework.activations import Name``.

Every activation a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.namespace`).
"""

from __future__ import annotations

from typing import Any

from framework.layer import Layer  # noqa: F401
from framework.namespace import Namespace

_NAMESPACE = Namespace("activations")


def get(identifier: Any, **kwargs: Any) -> Any:
    """Resolve a registered name, config dict, class or instance to an instance."""
    return _NAMESPACE.get(identifier, **kwargs)


def names() -> list[str]:
    """The registered activations, sorted."""
    return _NAMESPACE.names()


def __getattr__(name: str) -> Any:
    return _NAMESPACE.getattr(name)


def __dir__() -> list[str]:
    return _NAMESPACE.dir(globals())
